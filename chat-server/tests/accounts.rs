//! Accounts (the AUTH capability, PROTOCOL.md section 10) over real
//! loopback TCP: registering, logging in by password and by token, logging
//! out, names that belong to accounts, a server that takes no guests, the
//! stricter limits before a client is named, and throttled attempts.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_proto::{ClientConfig, Message, Refusal, Secret, features};
use common::{Client, LOBBY, T, TestServer, config, connect_with, named};

const AUTH: u64 = features::ROOMS | features::AUTH;
const PASSWORD: &str = "correct horse battery";

fn auth() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.features = AUTH;
    config
}

/// A client welcomed with AUTH, not named yet.
async fn unnamed(server: std::net::SocketAddr) -> Client {
    let mut client = connect_with(server, auth()).await;
    client.hello().await;
    match client.welcomed().await {
        Message::Welcome { features, .. } => assert_eq!(features, AUTH),
        _ => unreachable!(),
    }
    client
}

fn register(name: &str, password: &str) -> Message {
    Message::Register {
        name: name.into(),
        password: password.into(),
    }
}

fn login(name: &str, password: &str) -> Message {
    Message::Login {
        name: name.into(),
        password: password.into(),
    }
}

fn by_token(token: &Secret) -> Message {
    Message::LoginToken {
        token: token.clone(),
    }
}

/// Expects `LoggedIn`, `Named` and the lobby's roster; returns the token
/// and its expiry.
async fn logged_in(client: &mut Client, name: &str) -> (Secret, u64) {
    let (token, expires) = match client.recv().await {
        Message::LoggedIn {
            name: got,
            token,
            expires,
        } => {
            assert_eq!(got, name);
            (token, expires)
        }
        other => panic!("expected LoggedIn, got {other:?}"),
    };
    assert_eq!(client.expect_named().await, name);
    let roster = client.roster(LOBBY).await;
    assert_eq!(roster.last(), Some(&client.me()));
    (token, expires)
}

/// A client logged in to a new account `name`; its token.
async fn registered(server: std::net::SocketAddr, name: &str) -> (Client, Secret) {
    let mut client = unnamed(server).await;
    client.send(register(name, PASSWORD)).await;
    let (token, _) = logged_in(&mut client, name).await;
    (client, token)
}

/// Leaves as a client does: `Exit`, and the server's.
async fn leave(client: &mut Client) {
    client.send(Message::Exit).await;
    client.expect_exit().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn register_then_log_in_by_password_and_by_token() {
    let server = TestServer::start(config()).await;
    let mut a = unnamed(server.addr).await;
    a.send(register("Alice", PASSWORD)).await;
    let (token, expires) = logged_in(&mut a, "Alice").await;
    assert!(!token.is_empty());
    let ttl = config().token_ttl.as_secs();
    assert!(
        (now() + ttl - 5..=now() + ttl).contains(&expires),
        "{expires}"
    );
    leave(&mut a).await;

    // By password, in another case: the account's own form comes back.
    let mut b = unnamed(server.addr).await;
    b.send(login("ALICE", PASSWORD)).await;
    let (second, _) = logged_in(&mut b, "Alice").await;
    assert!(!second.is_empty());
    assert_ne!(second, token, "each login gets its own token");
    leave(&mut b).await;

    // By token: the same token stays in use.
    let mut c = unnamed(server.addr).await;
    c.send(by_token(&token)).await;
    let (empty, until) = logged_in(&mut c, "Alice").await;
    assert!(empty.is_empty());
    assert_eq!(until, expires);
    leave(&mut c).await;
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_name_get_the_same_answer_and_the_client_may_retry() {
    let server = TestServer::start(config()).await;
    let (mut a, _) = registered(server.addr, "alice").await;
    leave(&mut a).await;
    let mut b = unnamed(server.addr).await;
    b.send(login("alice", "not the password")).await;
    let wrong = b.expect_refused(Refusal::AuthFailed, "alice").await;
    b.send(login("nobody", PASSWORD)).await;
    let unknown = b.expect_refused(Refusal::AuthFailed, "nobody").await;
    assert_eq!(wrong, unknown);
    // The subject is the name as sent, not its NFC form.
    b.send(login("Zoe\u{308}", PASSWORD)).await;
    b.expect_refused(Refusal::AuthFailed, "Zoe\u{308}").await;
    b.send(by_token(&"00ff.bm9wZQ".into())).await;
    b.expect_refused(Refusal::AuthFailed, "").await;
    b.send(login("alice", PASSWORD)).await;
    logged_in(&mut b, "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn registration_refuses_bad_names_weak_passwords_and_taken_names() {
    let server = TestServer::start(config()).await;
    let (_alice, _) = registered(server.addr, "alice").await;
    let (_guest, _) = named(server.addr, "bob").await;
    let mut c = unnamed(server.addr).await;
    c.send(register("ALICE", PASSWORD)).await;
    c.expect_refused(Refusal::NameTaken, "ALICE").await;
    c.send(register("bob", PASSWORD)).await;
    c.expect_refused(Refusal::NameTaken, "bob").await;
    c.send(register("a b", PASSWORD)).await;
    c.expect_refused(Refusal::NameInvalid, "a b").await;
    c.send(register("guest-12", PASSWORD)).await;
    c.expect_refused(Refusal::NameInvalid, "guest-12").await;
    c.send(register("carol", "short")).await;
    c.expect_refused(Refusal::BadPassword, "carol").await;
    c.send(register("张三", "密码-correct horse")).await;
    logged_in(&mut c, "张三").await;
    server.stop().await;
}

#[tokio::test]
async fn a_registered_name_is_its_owners_alone() {
    let server = TestServer::start(config()).await;
    let (mut alice, _) = registered(server.addr, "alice").await;
    leave(&mut alice).await;

    // As a guest's first Nick (with or without AUTH): refused, then a
    // name assigned.
    for config in [auth(), common::rooms()] {
        let mut guest = connect_with(server.addr, config).await;
        guest.hello().await;
        guest.welcomed().await;
        guest.nick("Alice").await;
        guest.expect_refused(Refusal::NameReserved, "Alice").await;
        let assigned = guest.expect_named().await;
        assert!(assigned.starts_with("guest-"), "{assigned}");
        guest.roster(LOBBY).await;
        // As a rename.
        guest.nick("alice").await;
        guest.expect_refused(Refusal::NameReserved, "alice").await;
        leave(&mut guest).await;
    }

    // The owner, logged in, keeps the name; a second login while it is in
    // use is refused.
    let mut owner = unnamed(server.addr).await;
    owner.send(login("alice", PASSWORD)).await;
    logged_in(&mut owner, "alice").await;
    owner.nick("mallory").await;
    owner.expect_refused(Refusal::NameReserved, "mallory").await;
    let mut twin = unnamed(server.addr).await;
    twin.send(login("alice", PASSWORD)).await;
    twin.expect_refused(Refusal::NameTaken, "alice").await;
    // A request after the name is in: a login is out of turn.
    owner.send_raw(login("alice", PASSWORD)).await;
    owner
        .expect_error("protocol violation: Login after the client was named")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_token_and_ends_the_session() {
    let server = TestServer::start(config()).await;
    let (mut a, token) = registered(server.addr, "alice").await;
    a.send(Message::Logout).await;
    a.expect_exit().await;
    let mut b = unnamed(server.addr).await;
    b.send(by_token(&token)).await;
    b.expect_refused(Refusal::AuthFailed, "").await;
    // The password still works, and gives a new token.
    b.send(login("alice", PASSWORD)).await;
    let (fresh, _) = logged_in(&mut b, "alice").await;
    assert!(!fresh.is_empty() && fresh != token);
    server.stop().await;
}

#[tokio::test]
async fn a_token_stops_working_when_it_expires() {
    let mut config = config();
    config.token_ttl = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let (mut a, token) = registered(server.addr, "alice").await;
    leave(&mut a).await;
    // Until its expiry (whole seconds) the token works; after it, never.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut b = unnamed(server.addr).await;
        b.send(by_token(&token)).await;
        match b.recv().await {
            Message::LoggedIn { .. } => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the token never expired"
                );
                b.expect_named().await;
                b.roster(LOBBY).await;
                leave(&mut b).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Message::Refused { code, .. } => {
                assert_eq!(code, Refusal::AuthFailed);
                break;
            }
            other => panic!("expected LoggedIn or Refused, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_server_without_guests_wants_a_login() {
    let mut config = config();
    config.guests = false;
    let server = TestServer::start(config).await;
    // Clients that cannot log in are refused at the handshake.
    for features in [features::NONE, features::ROOMS] {
        let mut c = connect_with(server.addr, {
            let mut c = ClientConfig::default();
            c.features = features;
            c
        })
        .await;
        c.hello().await;
        c.expect_error(
            "this server requires an account: connect with a client that can log in \
             (the AUTH capability)",
        )
        .await;
    }
    // A guest's Nick is refused, and the client may still register.
    let mut c = unnamed(server.addr).await;
    c.nick("alice").await;
    c.expect_refused(Refusal::AuthRequired, "alice").await;
    c.send(register("alice", PASSWORD)).await;
    logged_in(&mut c, "alice").await;
    server.stop().await;
}

#[tokio::test]
async fn before_the_name_frames_are_small_and_only_naming_requests_pass() {
    let server = TestServer::start(config()).await;
    let mut a = unnamed(server.addr).await;
    a.send_raw(Message::Join {
        room: "大厅".into(),
    })
    .await;
    a.expect_error("expected Nick, Register, Login or LoginToken first, got Join")
        .await;
    // A password of 2 KiB: refused from the frame's header.
    let mut b = unnamed(server.addr).await;
    let long = login("alice", &"x".repeat(2048));
    b.send_raw(long).await;
    b.expect_error("invalid frame: frame of 2058 bytes exceeds the 1024-byte limit")
        .await;
    // After the name, the session's limit.
    let (mut c, _) = registered(server.addr, "carol").await;
    c.say_in(LOBBY, &"长".repeat(3000)).await;
    leave(&mut c).await;
    server.stop().await;
}

#[tokio::test]
async fn a_brute_force_is_refused_without_hashing() {
    let server = TestServer::start(config()).await;
    let (mut victim, _) = registered(server.addr, "victim").await;
    leave(&mut victim).await;
    let mut attacker = unnamed(server.addr).await;
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..300 {
        attacker
            .send(login("victim", &format!("guess number {i}")))
            .await;
        match attacker.recv().await {
            Message::Refused { code, detail, .. } => {
                if code == Refusal::Throttled {
                    assert!(
                        detail.starts_with("too many attempts: try again in "),
                        "{detail}"
                    );
                }
                *refused.entry(code.to_string()).or_default() += 1;
            }
            other => panic!("expected Refused, got {other:?}"),
        }
    }
    // Three tries per account per minute, then nothing but refusals that
    // cost no hash.
    assert_eq!(refused.get("login failed"), Some(&3), "{refused:?}");
    assert_eq!(refused.get("too many attempts"), Some(&297), "{refused:?}");
    // The account itself is safe, and the session still works.
    attacker.send(login("victim", PASSWORD)).await;
    attacker.expect_refused(Refusal::Throttled, "victim").await;
    server.stop().await;
}

/// Hundreds of guesses from one address are refused at once, while from
/// another address (::1, over TLS) a user logs in to another account with
/// its password, and the owner of an account under attack with its token.
#[tokio::test]
async fn a_brute_force_does_not_lock_out_others() {
    use chat_client::{Fingerprint, Login, Options, TlsOptions};
    use chat_server::{Server, Tls};

    let tls = Tls::self_signed(&["localhost".into()]).unwrap();
    let pin: Fingerprint = tls.fingerprint().parse().unwrap();
    let server = Server::bind("127.0.0.1:0", config())
        .await
        .unwrap()
        .tls("[::1]:0", tls)
        .await
        .unwrap();
    let (plain, secure) = (server.local_addr(), server.tls_addr().unwrap());
    let server = TestServer::running(server);
    let (mut owner, _) = registered(plain, "alice").await;
    leave(&mut owner).await;
    let (mut victim, token) = registered(plain, "victim").await;
    leave(&mut victim).await;

    // The attacker, from 127.0.0.1: several accounts, hundreds of guesses.
    let mut attacker = unnamed(plain).await;
    let mut throttled = 0;
    for i in 0..400 {
        let target = ["victim", "root"][i % 2];
        attacker.send(login(target, &format!("guess {i}"))).await;
        match attacker.recv().await {
            Message::Refused {
                code: Refusal::Throttled,
                ..
            } => throttled += 1,
            Message::Refused {
                code: Refusal::AuthFailed,
                ..
            } => {}
            other => panic!("expected Refused, got {other:?}"),
        }
    }
    // 30 attempts a minute from one address, a few more as the limit
    // refills while the first ones are hashed.
    assert!(throttled >= 360, "only {throttled} of 400 throttled");

    // From ::1 over TLS: alice with her password, the victim's owner with
    // a token (its password attempts are spent for the minute).
    let logins = [
        Login::Password {
            name: "alice".into(),
            password: PASSWORD.into(),
        },
        Login::Token(token),
    ];
    for (login, name) in logins.into_iter().zip(["alice", "victim"]) {
        let mut options = Options::default();
        options.tls = Some(TlsOptions::fingerprint(pin));
        options.login = Some(login);
        let client = tokio::time::timeout(T, chat_client::Client::connect_with(secure, options))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(client.session().account.as_ref().unwrap().name, name);
        assert!(client.session().me.ip().is_ipv6());
        tokio::time::timeout(T, client.exit())
            .await
            .unwrap()
            .unwrap();
    }
    server.stop().await;
}
