//! `tunnel_path`: `TunnelPath::parse` is total; an accepted path prints as a path that parses to
//! the same value, and the printed form differs from the input at most in the case of hex ids
//! (contact ids are base64url, which has one spelling). Every path we print parses back, in
//! lower case too where it has no contact id.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::tunnel::{ContactId, RoutingId, TunnelId, TunnelPath};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Text(String),
    /// A path we print, then lower-cased and/or with one character replaced.
    Edited {
        path: Path,
        lower_case: bool,
        edit: Option<(u16, char)>,
    },
}

#[derive(Arbitrary, Debug)]
enum Path {
    New([u8; 16]),
    Connect([u8; 3], [u8; 16]),
    Contact(Vec<u8>),
}

fn check(text: &str) {
    let Ok(path) = TunnelPath::parse(text) else {
        return;
    };
    let printed = path.to_string();
    assert_eq!(TunnelPath::parse(&printed).as_ref(), Ok(&path));
    match path {
        TunnelPath::Contact(_) => assert_eq!(printed, text),
        TunnelPath::New(_) | TunnelPath::Connect(..) => {
            assert!(printed.eq_ignore_ascii_case(text));
        }
    }
}

fuzz_target!(|input: Input| {
    let (path, lower_case, edit) = match input {
        Input::Text(text) => return check(&text),
        Input::Edited {
            path,
            lower_case,
            edit,
        } => (path, lower_case, edit),
    };
    let path = match path {
        Path::New(tid) => TunnelPath::New(TunnelId::new(tid)),
        Path::Connect(rid, tid) => TunnelPath::Connect(RoutingId::new(rid), TunnelId::new(tid)),
        Path::Contact(bytes) => match ContactId::new(bytes) {
            Some(cid) => TunnelPath::Contact(cid),
            None => return,
        },
    };
    let mut text = path.to_string();
    if lower_case && !matches!(path, TunnelPath::Contact(_)) {
        text = text.to_lowercase();
    }
    let Some((position, replacement)) = edit else {
        assert_eq!(TunnelPath::parse(&text), Ok(path));
        return;
    };
    let mut chars: Vec<char> = text.chars().collect();
    let len = chars.len();
    chars[usize::from(position) % len] = replacement;
    check(&chars.into_iter().collect::<String>());
});
