// A downstream program, built by .ci/run against chat-proto added by path
// (`cargo add --path`). `chat` is the README's example, verbatim: a client
// driving `Connection` over a tokio `TcpStream`. A one-client server, also
// on `Connection`, pings it: a client that did not answer would be dropped
// at the server's idle timeout.
use std::net::SocketAddr;

use bytes::BytesMut;
use chat_proto::{ChatCodec, Connection, Event, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn chat(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = Connection::client(Default::default());
    loop {
        // Take every complete frame; Ping is answered inside `poll`.
        let polled = loop {
            match conn.poll() {
                Ok(Some(Event::Welcome(session))) => {
                    println!("connected as {}", session.addr);
                    conn.send(&Message::Send {
                        text: "你好, world".into(),
                    })?;
                }
                Ok(Some(Event::Message(Message::Relay { ip, port, text }))) => {
                    println!("{}: {text}", SocketAddr::new(ip, port));
                }
                Ok(Some(other)) => println!("{other:?}"),
                Ok(None) => break Ok(()),
                Err(broken) => break Err(broken),
            }
        };
        // Write what the machine queued: Hello, Pongs, our Send, a last Error.
        if let Some(bytes) = conn.transmit() {
            stream.write_all(&bytes).await?;
        }
        polled?;
        if conn.is_closed() {
            return Ok(()); // the server's Exit or Error
        }
        if stream.read_buf(conn.input()).await? == 0 {
            return Ok(conn.eof()?);
        }
    }
}

/// Admits one client and pings it; once it has answered and said
/// something, relays a greeting and shuts down. Returns what the client did.
async fn serve(listener: TcpListener) -> Vec<Event> {
    let (mut sock, peer) = listener.accept().await.unwrap();
    let mut conn = Connection::server(Default::default());
    let mut seen = Vec::new();
    loop {
        while let Some(event) = conn.poll().unwrap() {
            if let Event::Hello { .. } = event {
                conn.accept(peer).unwrap();
                conn.ping(42).unwrap();
            }
            seen.push(event);
        }
        let pong = Event::Message(Message::Pong { nonce: 42 });
        let said = seen
            .iter()
            .any(|e| matches!(e, Event::Message(Message::Send { .. })));
        if seen.contains(&pong) && said && !conn.is_closed() {
            let from = "[2001:db8::1]:50000".parse().unwrap();
            conn.send(&Message::relay(from, "hello!!")).unwrap();
            conn.shutdown();
        }
        if let Some(bytes) = conn.transmit() {
            sock.write_all(&bytes).await.unwrap();
        }
        if conn.is_closed() {
            return seen;
        }
        let n = sock.read_buf(conn.input()).await.unwrap();
        assert!(n > 0, "the client left before the server was done");
    }
}

#[tokio::main]
async fn main() {
    // The codec on its own, and the tokio-codec feature.
    let codec = ChatCodec::new();
    let mut buf = BytesMut::new();
    codec
        .encode(
            &Message::Send {
                text: "你好".into(),
            },
            &mut buf,
        )
        .unwrap();
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Message::Send {
            text: "你好".into()
        })
    );
    tokio_util::codec::Encoder::encode(&mut ChatCodec::new(), Message::Exit, &mut buf).unwrap();
    assert_eq!(&buf[..], [0, 0, 0, 1, 1]);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener));
    chat(TcpStream::connect(addr).await.unwrap()).await.unwrap();
    let seen = server.await.unwrap();
    assert!(seen.contains(&Event::Message(Message::Pong { nonce: 42 })));
    assert!(seen.contains(&Event::Message(Message::Send {
        text: "你好, world".into()
    })));
    println!("downstream: ok");
}
