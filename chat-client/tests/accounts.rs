//! The library's logins against a real server over loopback: registering,
//! logging in by password and by the token it gave, refusals as errors,
//! and logging out (PROTOCOL.md section 10).

mod common;

use chat_client::{Client, Error, Login, Options, Refusal, Secret};
use chat_server::Config;
use common::{start, within};

const PASSWORD: &str = "correct horse battery";

fn with(login: Login) -> Options {
    let mut options = Options::default();
    options.login = Some(login);
    options
}

fn password(name: &str, password: &str) -> Login {
    Login::Password {
        name: name.into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn register_log_in_by_token_and_log_out() {
    let server = start(Config::default()).await;
    let addr = server.addr;
    let register = Login::Register {
        name: "张三".into(),
        password: PASSWORD.into(),
    };
    let client = within(Client::connect_with(addr, with(register)))
        .await
        .unwrap();
    let session = client.session().clone();
    assert_eq!(session.name.as_deref(), Some("张三"));
    let account = session.account.clone().expect("logged in");
    assert_eq!(account.name, "张三");
    assert!(!account.token.is_empty());
    within(client.exit()).await.unwrap();

    // The token logs in, and stays the session's token.
    let token = account.token.clone();
    let client = within(Client::connect_with(
        addr,
        with(Login::Token(token.clone())),
    ))
    .await
    .unwrap();
    let again = client.session().account.clone().expect("logged in");
    assert_eq!(again.token, token);
    assert_eq!(again.expires, account.expires);
    // Logging out revokes it.
    let (sender, _events) = client.split();
    within(sender.logout()).await.unwrap();
    let refused = within(Client::connect_with(addr, with(Login::Token(token)))).await;
    assert!(
        matches!(
            refused,
            Err(Error::Login {
                code: Refusal::AuthFailed,
                ..
            })
        ),
        "{refused:?}"
    );
    // The password still works.
    let client = within(Client::connect_with(addr, with(password("张三", PASSWORD))))
        .await
        .unwrap();
    within(client.exit()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn refusals_are_errors_that_say_why() {
    let server = start(Config::default()).await;
    let addr = server.addr;
    let wrong = within(Client::connect_with(
        addr,
        with(password("nobody", PASSWORD)),
    ))
    .await;
    match wrong {
        Err(
            e @ Error::Login {
                code: Refusal::AuthFailed,
                ..
            },
        ) => {
            assert!(
                e.to_string().starts_with("login refused: login failed: "),
                "{e}"
            );
        }
        other => panic!("expected a refused login, got {other:?}"),
    }
    let weak = Login::Register {
        name: "bob".into(),
        password: Secret::from("short"),
    };
    let weak = within(Client::connect_with(addr, with(weak))).await;
    assert!(
        matches!(
            weak,
            Err(Error::Login {
                code: Refusal::BadPassword,
                ..
            })
        ),
        "{weak:?}"
    );
    // A guest cannot log out.
    let guest = within(Client::connect(addr)).await.unwrap();
    assert!(guest.session().account.is_none());
    let (sender, _events) = guest.split();
    assert!(matches!(
        sender.logout().await,
        Err(Error::NoAccount {
            request: "Logout",
            ..
        })
    ));
    within(sender.exit()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_server_without_accounts_says_so() {
    let config = Config {
        accounts: chat_server::Storage::Off,
        ..Config::default()
    };
    let server = start(config).await;
    let got = within(Client::connect_with(
        server.addr,
        with(password("a", PASSWORD)),
    ))
    .await;
    assert!(
        matches!(
            got,
            Err(Error::NoAccount {
                request: "Login",
                ..
            })
        ),
        "{got:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_without_guests_refuses_a_guest_with_a_reason() {
    let config = Config {
        guests: false,
        ..Config::default()
    };
    let server = start(config).await;
    // A guest: told, with a code it can act on.
    let got = within(Client::connect(server.addr)).await;
    assert!(
        matches!(
            got,
            Err(Error::Login {
                code: Refusal::AuthRequired,
                ..
            })
        ),
        "{got:?}"
    );
    // A version 1 client cannot log in: refused at the handshake.
    let mut v1 = Options::default();
    v1.rooms = false;
    let got = within(Client::connect_with(server.addr, v1)).await;
    match got {
        Err(Error::Rejected { reason }) => {
            assert!(reason.contains("requires an account"), "{reason}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    server.stop().await;
}
