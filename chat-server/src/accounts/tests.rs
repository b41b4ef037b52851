//! The accounts service: registration, logins, tokens, throttling, and
//! both stores.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const OTHER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
const PASSWORD: &str = "correct horse battery";

fn name(raw: &str) -> Name {
    Name::parse(raw, 32).unwrap()
}

fn config(accounts: Storage) -> Config {
    Config {
        accounts,
        ..Config::default()
    }
}

fn memory() -> Accounts {
    Accounts::open(&config(Storage::Memory)).unwrap().unwrap()
}

fn disk(dir: &Path, clock: Clock) -> Result<Accounts, StoreError> {
    Accounts::open_with(&config(Storage::Disk(dir.to_path_buf())), clock).map(Option::unwrap)
}

#[test]
fn off_means_none() {
    assert!(Accounts::open(&config(Storage::Off)).unwrap().is_none());
}

#[tokio::test]
async fn register_then_login_keeps_the_registered_form() {
    let accounts = memory();
    assert!(!accounts.is_registered("ann"));
    let login = accounts.register(&name("Ann"), PASSWORD, IP).await.unwrap();
    assert_eq!((login.name.as_str(), login.key.as_str()), ("Ann", "ann"));
    assert!(login.token.is_some());
    assert!(accounts.is_registered("ann"));
    // Any case logs in, as the registered form.
    let again = accounts.login(&name("ANN"), PASSWORD, IP).await.unwrap();
    assert_eq!(again.name, "Ann");
    assert_ne!(again.token, login.token);
    assert_ne!(again.token_id, login.token_id);
    // Secrets stay out of Debug.
    let debug = format!("{again:?}");
    assert!(!debug.contains(again.token.as_deref().unwrap()), "{debug}");
}

#[tokio::test]
async fn a_registered_name_is_taken_in_any_case() {
    let accounts = memory();
    accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    let err = accounts
        .register(&name("ANN"), "another password", IP)
        .await;
    assert_eq!(err, Err(AuthError::Taken));
    // The first password still holds.
    accounts.login(&name("ann"), PASSWORD, IP).await.unwrap();
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_make_one_account() {
    let accounts = memory();
    let (ann, ann2) = (name("ann"), name("Ann"));
    let (a, b) = tokio::join!(
        accounts.register(&ann, "password one", IP),
        accounts.register(&ann2, "password two", OTHER_IP),
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    assert!(matches!(a.err().or(b.err()), Some(AuthError::Taken)));
}

#[tokio::test]
async fn weak_passwords_are_refused_with_a_reason() {
    let accounts = memory();
    for bad in ["short", &"x".repeat(257)] {
        match accounts.register(&name("ann"), bad, IP).await {
            Err(AuthError::Weak(why)) => assert!(why.contains("bytes"), "{why}"),
            other => panic!("expected Weak, got {other:?}"),
        }
    }
    assert!(!accounts.is_registered("ann"));
}

#[tokio::test]
async fn wrong_password_and_unknown_name_fail_alike() {
    let accounts = memory();
    accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    let wrong = accounts.login(&name("ann"), "not the password", IP).await;
    let unknown = accounts.login(&name("bob"), PASSWORD, OTHER_IP).await;
    assert_eq!(wrong, Err(AuthError::Failed));
    assert_eq!(unknown, Err(AuthError::Failed));
    assert_eq!(
        wrong.unwrap_err().to_string(),
        unknown.unwrap_err().to_string()
    );
    // A password no account can have fails the same way.
    let odd = accounts.login(&name("ann"), "short", IP).await;
    assert_eq!(odd, Err(AuthError::Failed));
}

#[tokio::test]
async fn an_unknown_name_costs_a_hash_too() {
    let accounts = memory();
    accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    assert_eq!(accounts.hashes(), 1);
    let _ = accounts.login(&name("ann"), "not the password", IP).await;
    assert_eq!(accounts.hashes(), 2);
    let _ = accounts.login(&name("bob"), "not the password", IP).await;
    assert_eq!(accounts.hashes(), 3);
}

#[tokio::test]
async fn a_token_logs_in_without_a_new_token() {
    let accounts = memory();
    let login = accounts.register(&name("Ann"), PASSWORD, IP).await.unwrap();
    let token = login.token.unwrap();
    let again = accounts.login_token(&token, OTHER_IP).await.unwrap();
    assert_eq!(again.name, "Ann");
    assert_eq!(again.key, "ann");
    assert_eq!(again.token, None);
    assert_eq!(again.token_id, login.token_id);
    assert_eq!(again.expires, login.expires);
    // Reusable until it expires or is revoked.
    accounts.login_token(&token, IP).await.unwrap();
}

#[tokio::test]
async fn bad_tokens_fail() {
    let accounts = memory();
    let login = accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    let token = login.token.unwrap();
    let (selector, secret) = token.split_once('.').unwrap();
    let mut flipped = secret.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{selector}.{}", String::from_utf8(flipped).unwrap());
    let other_selector = format!("{}.{secret}", "0".repeat(32));
    for bad in [
        "",
        "nonsense",
        &flipped,
        &other_selector,
        &token[1..],
        &format!("{token}x"),
        &token.to_uppercase(),
    ] {
        assert_eq!(
            accounts.login_token(bad, IP).await,
            Err(AuthError::Failed),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn tokens_expire() {
    let clock = Clock::fixed(1_000_000);
    let config = Config {
        token_ttl: Duration::from_secs(3600),
        ..config(Storage::Memory)
    };
    let accounts = Accounts::open_with(&config, clock.clone())
        .unwrap()
        .unwrap();
    let login = accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    assert_eq!(login.expires, 1_000_000 + 3600);
    let token = login.token.unwrap();
    clock.advance(Duration::from_secs(3599));
    accounts.login_token(&token, IP).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        accounts.login_token(&token, IP).await,
        Err(AuthError::Failed)
    );
    // A password login still works, with a token from now.
    let fresh = accounts.login(&name("ann"), PASSWORD, IP).await.unwrap();
    assert_eq!(fresh.expires, 1_000_000 + 2 * 3600);
}

#[tokio::test]
async fn logout_revokes_that_token_only() {
    let accounts = memory();
    let first = accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    let second = accounts.login(&name("ann"), PASSWORD, IP).await.unwrap();
    accounts.logout(first.token_id).await.unwrap();
    let token = first.token.unwrap();
    assert_eq!(
        accounts.login_token(&token, IP).await,
        Err(AuthError::Failed)
    );
    accounts
        .login_token(second.token.as_deref().unwrap(), IP)
        .await
        .unwrap();
    // Again: nothing to revoke, no error.
    accounts.logout(first.token_id).await.unwrap();
}

#[tokio::test]
async fn an_account_keeps_its_newest_tokens() {
    let config = Config {
        login_rate: 0,
        login_rate_ip: 0,
        ..config(Storage::Memory)
    };
    let clock = Clock::fixed(1_000);
    let accounts = Accounts::open_with(&config, clock.clone())
        .unwrap()
        .unwrap();
    let first = accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    let mut last = None;
    for _ in 0..store::TOKENS_PER_ACCOUNT {
        clock.advance(Duration::from_secs(1));
        last = Some(accounts.login(&name("ann"), PASSWORD, IP).await.unwrap());
    }
    let first = first.token.unwrap();
    assert_eq!(
        accounts.login_token(&first, IP).await,
        Err(AuthError::Failed)
    );
    let last = last.unwrap().token.unwrap();
    accounts.login_token(&last, IP).await.unwrap();
}

#[tokio::test]
async fn a_brute_force_is_refused_without_hashing_while_others_log_in() {
    let accounts = memory();
    accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    accounts
        .register(&name("bob"), PASSWORD, OTHER_IP)
        .await
        .unwrap();
    let attacker: IpAddr = "198.51.100.7".parse().unwrap();
    let start = Instant::now();
    let mut refused = 0;
    let mut failed = 0;
    for i in 0..500 {
        match accounts
            .login(&name("ann"), &format!("guess number {i}"), attacker)
            .await
        {
            Err(AuthError::Throttled { retry }) => {
                assert!(retry > Duration::ZERO && retry <= Duration::from_secs(60));
                refused += 1;
            }
            Err(AuthError::Failed) => failed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let took = start.elapsed();
    // The account's allowance (3 a minute) is all that was hashed.
    assert_eq!(failed, 3);
    assert_eq!(refused, 497);
    assert_eq!(accounts.hashes(), 2 + 3);
    // 497 refusals hashed nothing: far less than one hash each.
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Another account, from another address, logs in meanwhile.
    accounts
        .login(&name("bob"), PASSWORD, OTHER_IP)
        .await
        .unwrap();
    // The attacker's address has spent its allowance (30 a minute) on
    // those attempts, refused or not: other accounts are closed to it too.
    for i in 0..20 {
        let target = name(&format!("user{i}"));
        let err = accounts.login(&target, "whatever you say", attacker).await;
        assert!(matches!(err, Err(AuthError::Throttled { .. })), "{err:?}");
    }
    // One address spreading guesses over many accounts: 30 a minute.
    let spreader: IpAddr = "2001:db8::1".parse().unwrap();
    let mut throttled = 0;
    for i in 0..100 {
        let target = name(&format!("user{i}"));
        if let Err(AuthError::Throttled { .. }) =
            accounts.login(&target, "whatever you say", spreader).await
        {
            throttled += 1;
        }
    }
    // 30 pass at once, and one more each 2 s the hashes take meanwhile.
    assert!((50..=70).contains(&throttled), "{throttled}");
    assert_eq!(accounts.hashes(), 2 + 3 + 1 + (100 - throttled));
    assert!(accounts.throttled_keys() > 0);
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    let config = Config {
        register_rate: 2,
        ..config(Storage::Memory)
    };
    let accounts = Accounts::open(&config).unwrap().unwrap();
    accounts.register(&name("a1"), PASSWORD, IP).await.unwrap();
    accounts.register(&name("a2"), PASSWORD, IP).await.unwrap();
    let err = accounts.register(&name("a3"), PASSWORD, IP).await;
    assert!(matches!(err, Err(AuthError::Throttled { .. })), "{err:?}");
    assert_eq!(accounts.hashes(), 2);
    assert!(!accounts.is_registered("a3"));
    accounts
        .register(&name("a3"), PASSWORD, OTHER_IP)
        .await
        .unwrap();
}

#[tokio::test]
async fn token_logins_are_limited_per_address() {
    let config = Config {
        login_rate_ip: 5,
        ..config(Storage::Memory)
    };
    let accounts = Accounts::open(&config).unwrap().unwrap();
    let login = accounts
        .register(&name("ann"), PASSWORD, OTHER_IP)
        .await
        .unwrap();
    let token = login.token.unwrap();
    for _ in 0..5 {
        accounts.login_token("junk", IP).await.unwrap_err();
    }
    let err = accounts.login_token(&token, IP).await;
    assert!(matches!(err, Err(AuthError::Throttled { .. })), "{err:?}");
    accounts.login_token(&token, OTHER_IP).await.unwrap();
}

#[tokio::test]
async fn a_reopened_disk_store_keeps_accounts_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::fixed(5_000);
    let accounts = disk(dir.path(), clock.clone()).unwrap();
    let ann = accounts.register(&name("Ann"), PASSWORD, IP).await.unwrap();
    let revoked = accounts.login(&name("ann"), PASSWORD, IP).await.unwrap();
    accounts.logout(revoked.token_id).await.unwrap();
    // The file is held: a second open is refused.
    match disk(dir.path(), clock.clone()) {
        Err(StoreError::Locked { path }) => assert!(path.ends_with(FILE)),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(accounts);
    let accounts = disk(dir.path(), clock.clone()).unwrap();
    assert!(accounts.is_registered("ann"));
    let login = accounts.login(&name("ANN"), PASSWORD, IP).await.unwrap();
    assert_eq!(login.name, "Ann");
    let token = ann.token.unwrap();
    let again = accounts.login_token(&token, IP).await.unwrap();
    assert_eq!(again.expires, 5_000 + Config::default().token_ttl.as_secs());
    let revoked = revoked.token.unwrap();
    assert_eq!(
        accounts.login_token(&revoked, IP).await,
        Err(AuthError::Failed)
    );
    assert_eq!(
        accounts.register(&name("ann"), PASSWORD, OTHER_IP).await,
        Err(AuthError::Taken)
    );
    // Expiry holds on disk too, and expired tokens are swept on opening.
    clock.advance(Config::default().token_ttl);
    assert_eq!(
        accounts.login_token(&token, IP).await,
        Err(AuthError::Failed)
    );
    drop(accounts);
    let store = redb::Redb::open(&dir.path().join(FILE)).unwrap();
    use store::Backend as _;
    assert_eq!(
        store.sweep(clock.now()).unwrap(),
        1,
        "the third login's token"
    );
    assert_eq!(store.sweep(clock.now()).unwrap(), 0);
    drop(store);
    let accounts = disk(dir.path(), clock.clone()).unwrap();
    assert!(accounts.is_registered("ann"));
    // And the file is apart from history's.
    assert!(dir.path().join(FILE).exists());
    assert!(!dir.path().join("history.redb").exists());
}

#[test]
fn a_corrupt_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), b"not a database at all").unwrap();
    match disk(dir.path(), Clock::default()) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains(FILE), "{text}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_history_file_is_not_an_accounts_store() {
    let dir = tempfile::tempdir().unwrap();
    let history = crate::store::RedbStore::open(dir.path().join("history.redb")).unwrap();
    drop(history);
    std::fs::rename(dir.path().join("history.redb"), dir.path().join(FILE)).unwrap();
    match disk(dir.path(), Clock::default()) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("accounts"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_unknown_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE);
    let store = redb::Redb::open(&path).unwrap();
    store.put_meta("layout", 99).unwrap();
    drop(store);
    match redb::Redb::open(&path) {
        Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("99"), "{detail}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_corrupt_accounts_file_stops_the_server_at_bind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
    let config = Config {
        storage: Storage::Off,
        ..config(Storage::Disk(dir.path().to_path_buf()))
    };
    match crate::Server::bind("127.0.0.1:0", config).await {
        Err(crate::Error::Store(e)) => assert!(e.to_string().contains(FILE), "{e}"),
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// Not a check: prints what a hash costs and how many password logins a
/// second `hash_workers` = 2 sustains. Run it optimized:
/// `cargo test --release -p chat-server --lib accounts::tests::measure -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand in release"]
fn measure_hash_and_logins() {
    const HASHES: usize = 20;
    const LOGINS: usize = 200;
    let mut times: Vec<Duration> = (0..HASHES)
        .map(|_| {
            let start = Instant::now();
            password::verify(PASSWORD, password::DUMMY);
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "one Argon2id hash (m=19456 KiB, t=2, p=1): median {:?}, min {:?}, max {:?} over {HASHES}",
        times[HASHES / 2],
        times[0],
        times[HASHES - 1]
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for storage in [Storage::Memory, Storage::Disk(dir.path().to_path_buf())] {
        rt.block_on(logins(storage, LOGINS));
    }
}

/// Password and token logins per second on `storage`, `n` of each.
async fn logins(storage: Storage, n: usize) {
    println!("{storage:?}:");
    let config = Config {
        login_rate: 0,
        login_rate_ip: 0,
        hash_workers: 2,
        ..config(storage)
    };
    let accounts = Accounts::open(&config).unwrap().unwrap();
    accounts.register(&name("ann"), PASSWORD, IP).await.unwrap();
    let start = Instant::now();
    let logins: Vec<_> = (0..n)
        .map(|_| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.login(&name("ann"), PASSWORD, IP).await })
        })
        .collect();
    for login in logins {
        login.await.unwrap().unwrap();
    }
    let took = start.elapsed();
    println!(
        "  {n} concurrent password logins, hash_workers 2: {took:?}, {:.0} logins/s",
        n as f64 / took.as_secs_f64()
    );
    let token = accounts
        .login(&name("ann"), PASSWORD, IP)
        .await
        .unwrap()
        .token
        .unwrap();
    let start = Instant::now();
    for _ in 0..n {
        accounts.login_token(&token, IP).await.unwrap();
    }
    let took = start.elapsed();
    println!(
        "  {n} token logins one after another: {took:?}, {:.0} logins/s",
        n as f64 / took.as_secs_f64()
    );
}

/// What both backends must do, the same way.
fn backend_contract(store: &dyn store::Backend) {
    use store::{Account, Grant, TOKENS_PER_ACCOUNT};
    let account = Account {
        name: "Ann".into(),
        phc: "$argon2id$...".into(),
        created: 1,
    };
    let grant = |expires, digest| Grant {
        key: "ann".into(),
        digest: [digest; 32],
        expires,
    };
    let id = |n: u8| TokenId([n; 16]);
    assert!(
        store
            .create("ann", &account, id(1), &grant(100, 1))
            .unwrap()
    );
    assert!(
        !store
            .create("ann", &account, id(2), &grant(100, 2))
            .unwrap()
    );
    assert_eq!(store.token(id(2)).unwrap(), None);
    assert_eq!(store.keys().unwrap(), vec!["ann".to_owned()]);
    assert_eq!(store.account("ann").unwrap(), Some(account));
    assert_eq!(store.account("bob").unwrap(), None);
    assert_eq!(store.token(id(1)).unwrap(), Some(grant(100, 1)));
    // A grant at 100 drops the token expiring then.
    store.grant(id(3), &grant(200, 3), 100).unwrap();
    assert_eq!(store.token(id(1)).unwrap(), None);
    assert_eq!(store.token(id(3)).unwrap(), Some(grant(200, 3)));
    assert!(store.revoke(id(3)).unwrap());
    assert!(!store.revoke(id(3)).unwrap());
    // Past the cap, the ones closest to expiring go.
    for n in 0..=TOKENS_PER_ACCOUNT as u8 {
        store
            .grant(id(10 + n), &grant(1000 + u64::from(n), n), 0)
            .unwrap();
    }
    assert_eq!(store.token(id(10)).unwrap(), None);
    assert!(store.token(id(11)).unwrap().is_some());
    let last = 10 + TOKENS_PER_ACCOUNT as u8;
    assert!(store.token(id(last)).unwrap().is_some());
    // Sweeping drops what has expired, and only that.
    assert_eq!(store.sweep(1001).unwrap(), 1);
    assert_eq!(store.token(id(11)).unwrap(), None);
    assert!(store.token(id(12)).unwrap().is_some());
    assert_eq!(store.sweep(5000).unwrap(), TOKENS_PER_ACCOUNT - 1);
    assert_eq!(store.sweep(5000).unwrap(), 0);
    assert!(store.account("ann").unwrap().is_some());
}

#[test]
fn the_memory_backend_keeps_the_contract() {
    backend_contract(&memory::Memory::default());
}

#[test]
fn the_redb_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    backend_contract(&redb::Redb::open(&dir.path().join(FILE)).unwrap());
}
