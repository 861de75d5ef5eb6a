//! The derive macro's compile errors, pinned: each mistake in `#[exactly(...)]` is reported
//! at the attribute, with a sentence saying what to write instead.

#[test]
fn derive_handler_ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui-pass/*.rs");
}
