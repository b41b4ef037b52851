//! tokio-util [`Decoder`] and [`Encoder`] implementations, so that
//! `Framed<TcpStream, ChatCodec>` works out of the box. Enabled by the
//! `tokio-codec` feature.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{ChatCodec, Frame, HEADER_LEN};
use crate::error::{EncodeError, StreamError};
use crate::message::Message;

impl Decoder for ChatCodec {
    type Item = Message;
    type Error = StreamError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, StreamError> {
        Ok(ChatCodec::decode(self, src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, StreamError> {
        Ok(ChatCodec::decode_eof(self, src)?)
    }
}

impl Encoder<&Message> for ChatCodec {
    type Error = StreamError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), StreamError> {
        Ok(ChatCodec::encode(self, msg, dst)?)
    }
}

impl Encoder<Message> for ChatCodec {
    type Error = StreamError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), StreamError> {
        Ok(ChatCodec::encode(self, &msg, dst)?)
    }
}

/// A pre-encoded frame is copied into the write buffer as is, if it fits
/// this codec's limit.
impl Encoder<Frame> for ChatCodec {
    type Error = StreamError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), StreamError> {
        let len = frame.len() - HEADER_LEN;
        if len > self.max_frame_len() {
            let max = self.max_frame_len();
            return Err(EncodeError::TooLarge { len, max }.into());
        }
        dst.extend_from_slice(frame.as_bytes());
        Ok(())
    }
}
