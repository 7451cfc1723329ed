//! Burrow patch (5): the PAD chunk (RFC 4820), which fills a path MTU probe to its size.
use super::{chunk_header::*, chunk_type::*, *};

/// A PAD chunk of `padding` zero bytes. A receiver skips it (its type's top bits are `10`),
/// so a probe made of HEARTBEAT and PAD is answered by a small HEARTBEAT-ACK.
#[derive(Default, Debug)]
pub(crate) struct ChunkPad {
    pub(crate) padding: usize,
}

impl fmt::Display for ChunkPad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} bytes", self.header(), self.padding)
    }
}

impl Chunk for ChunkPad {
    fn header(&self) -> ChunkHeader {
        ChunkHeader {
            typ: CT_PAD,
            flags: 0,
            value_length: self.padding as u16,
        }
    }

    fn unmarshal(raw: &Bytes) -> Result<Self> {
        let header = ChunkHeader::unmarshal(raw)?;
        if header.typ != CT_PAD {
            return Err(Error::ErrChunkTypeUnhandled);
        }
        Ok(ChunkPad {
            padding: header.value_length(),
        })
    }

    fn marshal_to(&self, buf: &mut BytesMut) -> Result<usize> {
        self.header().marshal_to(buf)?;
        buf.put_bytes(0, self.padding);
        Ok(buf.len())
    }

    fn check(&self) -> Result<()> {
        if CHUNK_HEADER_SIZE + self.padding > u16::MAX as usize {
            return Err(Error::ErrChunkHeaderInvalidLength);
        }
        Ok(())
    }

    fn value_length(&self) -> usize {
        self.padding
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
