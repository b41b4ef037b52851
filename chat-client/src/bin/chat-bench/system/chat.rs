//! This repository's chat server: the adapter over [`Client`]. A payload is
//! the text of a `Send`; a delivery is a `Relay`, tagged with the sender's
//! address.

use std::net::SocketAddr;

use chat_proto::{Event, Message};
use tokio::io::{Interest, Ready};

use super::{Got, Peer};
use crate::conn::Client;
use crate::error::Error;

impl Peer for Client {
    fn id(&self) -> usize {
        self.id
    }

    fn lost(&self, reason: String) -> Error {
        Client::lost(self, reason)
    }

    fn publish(&mut self, text: String) -> Result<(), Error> {
        self.conn
            .send(&Message::Send { text })
            .map_err(|e| self.lost(format!("cannot send: {e}")))
    }

    fn sending(&self) -> bool {
        Client::sending(self)
    }

    async fn ready(&mut self, interest: Interest) -> Result<Ready, Error> {
        match self.stream.ready(interest).await {
            Ok(ready) => Ok(ready),
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    fn write(&mut self) -> Result<bool, Error> {
        Client::write(self)
    }

    fn read(&mut self) -> Result<Option<usize>, Error> {
        Client::read(self)
    }

    #[inline(always)]
    fn take(&mut self, mut f: impl FnMut(Got<'_>)) -> Result<(), Error> {
        loop {
            match self.poll() {
                Ok(Some(Event::Message(Message::Relay { ip, port, text }))) => f(Got::Message {
                    from: Some(SocketAddr::new(ip, port)),
                    text: text.as_bytes(),
                }),
                Ok(Some(Event::Message(Message::Left { ip, port }))) => {
                    f(Got::Left(SocketAddr::new(ip, port)));
                }
                Ok(Some(Event::Error(reason))) => {
                    return Err(self.lost(format!("evicted by the server: {reason}")));
                }
                Ok(Some(Event::Exit)) => {
                    return Err(self.lost("the server sent Exit (shutting down)".into()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}
