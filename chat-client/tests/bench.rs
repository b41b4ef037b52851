//! The load generator's logic against an in-process server: every delivery
//! must arrive exactly once, in per-sender order, intact.
#![cfg(feature = "bench")]

use std::time::Duration;

use chat_client::bench::{self, Fanout, Idle};
use chat_server::{Config, Server};
use tokio::sync::oneshot;

async fn server(
    config: Config,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = Server::bind("127.0.0.1:0", config).await.expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    (addr, stop, task)
}

fn opts(server: std::net::SocketAddr) -> Fanout {
    Fanout {
        server,
        clients: 6,
        messages: 300,
        size: 64,
        rate: None,
        stalled: 0,
        window: 50,
        timeout: Duration::from_secs(10),
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_everything_once_in_order() {
    let (addr, stop, task) = server(Config::default()).await;
    let report = tokio::time::timeout(Duration::from_secs(60), bench::fanout(&opts(addr), None))
        .await
        .expect("fan-out finishes")
        .expect("fan-out runs");
    assert_eq!(report.expected, 6 * 5 * 300);
    assert_eq!(report.deliveries, report.expected);
    assert_eq!(
        (
            report.losses,
            report.duplicates,
            report.order_violations,
            report.corrupt
        ),
        (0, 0, 0, 0)
    );
    assert!(report.passed());
    assert!(report.latency_us.max > 0.0, "latencies were recorded");
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_fanout_with_large_chinese_text() {
    let (addr, stop, task) = server(Config::default()).await;
    let o = Fanout {
        clients: 3,
        messages: 40,
        size: 4000,
        rate: Some(400.0),
        ..opts(addr)
    };
    let report = tokio::time::timeout(Duration::from_secs(60), bench::fanout(&o, None))
        .await
        .expect("fan-out finishes")
        .expect("fan-out runs");
    assert!(report.passed(), "{report}");
    assert_eq!(report.deliveries, 3 * 2 * 40);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_clients_is_a_clear_error() {
    let config = Config {
        max_clients: 2,
        ..Config::default()
    };
    let (addr, stop, task) = server(config).await;
    let err = tokio::time::timeout(Duration::from_secs(30), bench::fanout(&opts(addr), None))
        .await
        .expect("fails fast")
        .expect_err("six clients do not fit in two places");
    assert!(err.to_string().contains("server full"), "{err}");
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_and_counted() {
    let (addr, stop, task) = server(Config::default()).await;
    let o = Idle {
        server: addr,
        connections: 40,
        parallel: 8,
        hold: Duration::from_millis(200),
        presence: true,
    };
    let report = tokio::time::timeout(Duration::from_secs(30), bench::idle(&o, None))
        .await
        .expect("idle run finishes")
        .expect("idle run works");
    assert_eq!(report.connections, 40);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn options_are_checked() {
    let o = Fanout {
        clients: 1,
        ..opts("127.0.0.1:9".parse().unwrap())
    };
    let err = bench::fanout(&o, None)
        .await
        .expect_err("one client cannot fan out");
    assert!(err.to_string().contains("at least 2 clients"), "{err}");
    let o = Fanout {
        size: 10,
        ..opts("127.0.0.1:9".parse().unwrap())
    };
    let err = bench::fanout(&o, None).await.expect_err("too small");
    assert!(err.to_string().contains("at least 31 bytes"), "{err}");
}
