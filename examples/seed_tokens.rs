//! Fills a Tessera SQLite database with many tokens for the gateway benchmark
//! (`bench/gateway.sh`): `cargo run --release --example seed_tokens -- DB COUNT KEYS_OUT KEYS_N [ACCOUNT]`.
//! Values are deterministic (token i comes from the bytes of i), and the first KEYS_N of
//! them are written to KEYS_OUT, one a line, for the load generator. Benchmark use only:
//! it writes rows directly, without audit entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection;
use tessera_core::token::TokenValue;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: seed_tokens DB COUNT KEYS_OUT KEYS_N [ACCOUNT]");
        std::process::exit(2);
    }
    let (db, count, keys_out, keys_n) = (
        &args[1],
        args[2].parse::<u64>().unwrap(),
        &args[3],
        args[4].parse::<u64>().unwrap(),
    );
    let account = args.get(5).map_or("admin", String::as_str);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{db}"))
        .await
        .unwrap();
    let (account_id,): (String,) = sqlx::query_as("SELECT id FROM accounts WHERE username = ?")
        .bind(account)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (already,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens WHERE name LIKE 'seed-%'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut keys = String::new();
    let now = tessera_core::Clock::now(&tessera_core::SystemClock).timestamp_millis();
    let expires = now + 365 * 86_400_000;
    let mut i = 0u64;
    while i < count {
        let mut tx = conn.begin().await.unwrap();
        for _ in 0..10_000.min(count - i) {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i + 1).to_be_bytes());
            bytes[8] = 0x5e;
            let value = TokenValue::from_random_bytes(&bytes);
            if i < keys_n {
                keys.push_str(value.expose_secret());
                keys.push('\n');
            }
            if (i as i64) >= already {
                sqlx::query(
                    "INSERT INTO tokens (id, account_id, name, hash, display, disabled, created_at, updated_at, expires_at) \
                     VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                )
                .bind(format!("tok_SEED{:022}", i))
                .bind(&account_id)
                .bind(format!("seed-{i}"))
                .bind(value.hash().to_hex())
                .bind(value.display())
                .bind(now)
                .bind(now)
                .bind(expires)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            i += 1;
        }
        tx.commit().await.unwrap();
    }
    std::fs::write(keys_out, keys).unwrap();
    eprintln!("{count} seed tokens in {db} ({already} were there); {keys_n} values in {keys_out}");
}
