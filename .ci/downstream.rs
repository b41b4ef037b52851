// A downstream program, built by .ci/run against chat-proto added by path
// (`cargo add --path`), using both the sans-I/O codec and `Framed`.
use bytes::BytesMut;
use chat_proto::{ChatCodec, Message};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[tokio::main]
async fn main() {
    let codec = ChatCodec::new();
    let mut buf = BytesMut::new();
    codec.encode(&Message::Send { text: "你好".into() }, &mut buf).unwrap();
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Send { text: "你好".into() }));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(sock, ChatCodec::new());
        let msg = framed.next().await.unwrap().unwrap();
        framed.send(msg).await.unwrap();
    });
    let mut framed = Framed::new(TcpStream::connect(addr).await.unwrap(), ChatCodec::new());
    framed.send(Message::hello()).await.unwrap();
    assert_eq!(framed.next().await.unwrap().unwrap(), Message::hello());
    echo.await.unwrap();
    println!("downstream: ok");
}
