//! Identifiers, codes and times as the API shows them.

/// A new random id with a type prefix, e.g. `dev_3f2a…` (128 random bits, hex).
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Whether `s` looks like an id with `prefix` (cheap input check before any lookup).
pub fn is_valid(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `digits` random decimal digits from the operating system's generator, uniformly.
pub fn random_digits(digits: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(digits);
    while out.len() < digits {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b)?;
        // Reject 250..=255 so every digit is equally likely.
        if b[0] < 250 {
            out.push(char::from(b'0' + b[0] % 10));
        }
    }
    Ok(out)
}

/// RFC 3339 UTC time (millisecond precision) for Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ids_and_digits() {
        let id = new("dev");
        assert!(is_valid("dev", &id));
        assert!(!is_valid("dlv", &id));
        assert!(!is_valid("dev", "dev_xyz"));
        let code = random_digits(8).unwrap();
        assert_eq!(code.len(), 8);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
    }
}
