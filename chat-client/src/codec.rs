//! The read side's decoder: `ChatCodec`, minus messages this version does
//! not know.
//!
//! tokio-util's `FramedRead` ends the stream after any decode error, so an
//! unknown variant from a newer server has to be skipped inside the decoder
//! rather than by the reader. `ChatCodec` removes such a frame before
//! reporting it, so skipping keeps the stream in step.

use bytes::BytesMut;
use chat_proto::{ChatCodec, DecodeError, Message, StreamError};
use tokio_util::codec::Decoder;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SkipUnknown(pub(crate) ChatCodec);

impl SkipUnknown {
    fn skip(
        &self,
        src: &mut BytesMut,
        decode: impl Fn(&ChatCodec, &mut BytesMut) -> Result<Option<Message>, DecodeError>,
    ) -> Result<Option<Message>, StreamError> {
        loop {
            match decode(&self.0, src) {
                Err(DecodeError::UnknownVariant { tag }) => {
                    tracing::debug!(tag, "skipping a message kind this client does not know");
                }
                other => return Ok(other?),
            }
        }
    }
}

impl Decoder for SkipUnknown {
    type Item = Message;
    type Error = StreamError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, StreamError> {
        self.skip(src, ChatCodec::decode)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, StreamError> {
        self.skip(src, ChatCodec::decode_eof)
    }
}
