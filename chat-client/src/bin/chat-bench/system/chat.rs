//! This repository's chat server: the adapter over [`Client`]. A version 1
//! client's payload is the text of a `Send`, delivered as a `Relay` tagged
//! with the sender's address; a named client's is the text of a `Say` in
//! one of its rooms, delivered as a `Said` that also names the sender and
//! the room.

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

    fn publish(&mut self, room: usize, text: String) -> Result<(), Error> {
        let result = if self.rooms.is_empty() {
            self.conn.send(&Message::Send { text })
        } else {
            // Lend the room's name to the message rather than copy it.
            let i = room % self.rooms.len();
            let msg = Message::Say {
                room: std::mem::take(&mut self.rooms[i]),
                text,
            };
            let result = self.conn.send(&msg);
            if let Message::Say { room, .. } = msg {
                self.rooms[i] = room;
            }
            result
        };
        result.map_err(|e| self.lost(format!("cannot send: {e}")))
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
                    room: None,
                    text: text.as_bytes(),
                }),
                Ok(Some(Event::Message(Message::Said { room, from, text }))) => f(Got::Said {
                    from: from.addr(),
                    name: &from.name,
                    room: &room,
                    text: text.as_bytes(),
                }),
                Ok(Some(Event::Message(Message::Left { ip, port }))) => {
                    f(Got::Left(SocketAddr::new(ip, port)));
                }
                Ok(Some(other)) => self.check(other)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}
