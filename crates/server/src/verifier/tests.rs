//! Unit tests of the verifier's pieces, and test helpers other modules use.
use super::*;
use tessera_core::clock::from_unix_millis;
use tessera_core::ids::TokenId;
use tessera_core::token::TokenName;

/// A cached token of account `acc_01JD0000000000000000000000`, as the verifier
/// makes one.
pub fn entry(id: &str) -> Arc<TokenEntry> {
    let record = record(id, "acc_01JD0000000000000000000000");
    let hash = record.hash;
    Arc::new(TokenEntry::new(
        record,
        &hash,
        from_unix_millis(1_800_000_000_000),
    ))
}

/// A token record as the store gives one back.
pub fn record(id: &str, account_id: &str) -> TokenRecord {
    let now = from_unix_millis(1_800_000_000_000);
    let value = TokenValue::from_random_bytes(&[7; 32]);
    TokenRecord {
        id: TokenId::from_trusted(id.into()),
        account_id: AccountId::from_trusted(account_id.into()),
        name: TokenName::parse("ci").unwrap(),
        note: None,
        hash: value.hash(),
        display: value.display(),
        previous: None,
        scopes: None,
        allowed_cidrs: None,
        rate_limit: None,
        disabled: None,
        created_at: now,
        updated_at: now,
        expires_at: None,
        last_used_at: None,
        last_used_ip: None,
        recent_ips: Vec::new(),
        usage_allowed: 0,
        usage_denied: 0,
        quota: None,
    }
}

#[test]
fn paths_are_kept_to_1024_characters() {
    assert_eq!(truncate_chars("/a/b", 1024), "/a/b");
    let ascii = "/".repeat(1500);
    assert_eq!(truncate_chars(&ascii, 1024).len(), 1024);
    // Two bytes a character: 600 characters (1,200 bytes) are all kept, and 1,100
    // are cut to 1,024, whole.
    let wide = "é".repeat(600);
    assert_eq!(truncate_chars(&wide, 1024), wide);
    let wider = "é".repeat(1100);
    assert_eq!(truncate_chars(&wider, 1024), "é".repeat(1024));
}

#[test]
fn carriers_debug_says_which_hold_a_value_never_the_value() {
    let c = Carriers {
        bearer: Some(b"tsr_secret"),
        ..Default::default()
    };
    let shown = format!("{c:?}");
    assert!(
        shown.contains("[redacted]") && !shown.contains("tsr_secret"),
        "{shown}"
    );
    let read = Credential(Ok(Some((b"tsr_secret", known::Fingerprint(1)))));
    assert_eq!(format!("{read:?}"), "Credential([redacted])");
}

#[test]
fn identity_lines_are_the_two_headers_inline_or_on_the_heap_for_long_ids() {
    let lines = IdentityLines::of(&record(
        "tok_01JD0000000000000000000001",
        "acc_01JD0000000000000000000000",
    ));
    assert!(
        matches!(lines, IdentityLines::Inline { .. }),
        "ULID ids fit"
    );
    assert_eq!(
        lines.as_bytes(),
        b"x-tessera-token-id: tok_01JD0000000000000000000001\r\n\
          x-tessera-account-id: acc_01JD0000000000000000000000\r\n"
    );
    let long = "x".repeat(100);
    let lines = IdentityLines::of(&record(&long, "acc_1"));
    assert!(matches!(lines, IdentityLines::Heap(_)));
    let expected = format!("x-tessera-token-id: {long}\r\nx-tessera-account-id: acc_1\r\n");
    assert_eq!(lines.as_bytes(), expected.as_bytes());
    let bad = IdentityLines::of(&record("tok_1\r\nx-evil: 1", "acc_1"));
    assert!(
        bad.as_bytes().is_empty(),
        "no line that is not valid header text"
    );
}

/// A gateway change reaches the routing table only: the verifier's epoch stays, so known
/// credentials keep their links; a token change moves it.
#[tokio::test]
async fn only_changes_to_tokens_or_accounts_move_the_epoch() {
    use tessera_core::store::Invalidation;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = tessera_store::AnyStore::connect(&url).await.unwrap();
    let app = crate::App::new(
        store,
        Arc::new(tessera_core::clock::SystemClock),
        crate::ServerConfig::default(),
    );
    let verifier = &app.state.verifier;
    let epoch = || verifier.epoch.load(Ordering::SeqCst);
    let before = epoch();
    verifier.invalidate(&Invalidation::gateway());
    assert_eq!(epoch(), before, "a gateway change");
    verifier.invalidate(&Invalidation::roles());
    assert_eq!(epoch(), before + 2, "a role change");
}
