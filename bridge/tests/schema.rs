//! `schema.graphql` is generated from the server: this test fails when they differ.
//! Regenerate with `cargo run -p bridge -- print-schema > schema.graphql`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn schema_file_matches_the_server() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let on_disk =
        std::fs::read_to_string(path).expect("schema.graphql exists at the repository root");
    let generated = bridge::graphql::sdl();
    assert!(
        on_disk == generated,
        "schema.graphql is out of date: run `cargo run -p bridge -- print-schema > schema.graphql`"
    );
}
