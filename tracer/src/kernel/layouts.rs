//! Turning parsed `format` files into the record layouts the programs use.
//! Every field the programs read is checked here; a missing or odd-sized one
//! is an error naming the tracepoint and field, never a silent zero.

use tracer_common::config::{
    AddrEncoding, Field, MsgLengthLayout, NetReceiveLayout, SendResetLayout, SockLayout,
    StateChangeLayout, TupleLayout,
};

use super::format::TracepointFormat;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("tracepoint {tracepoint} has no field `{field}` on this kernel")]
    MissingField {
        tracepoint: String,
        field: &'static str,
    },
    #[error("tracepoint {tracepoint}: field `{field}` is {size} bytes, expected {expected:?}")]
    UnexpectedSize {
        tracepoint: String,
        field: &'static str,
        size: u16,
        expected: &'static [u16],
    },
}

struct Reader<'a> {
    format: &'a TracepointFormat,
}

impl Reader<'_> {
    fn missing(&self, field: &'static str) -> LayoutError {
        LayoutError::MissingField {
            tracepoint: self.format.name.clone(),
            field,
        }
    }

    /// A required field whose size is one of `sizes`.
    fn field(&self, name: &'static str, sizes: &'static [u16]) -> Result<Field, LayoutError> {
        self.optional(name, sizes)?
            .ok_or_else(|| self.missing(name))
    }

    fn optional(
        &self,
        name: &'static str,
        sizes: &'static [u16],
    ) -> Result<Option<Field>, LayoutError> {
        let Some(f) = self.format.field(name) else {
            return Ok(None);
        };
        if !sizes.contains(&f.size) {
            return Err(LayoutError::UnexpectedSize {
                tracepoint: self.format.name.clone(),
                field: name,
                size: f.size,
                expected: sizes,
            });
        }
        Ok(Some(Field {
            offset: f.offset,
            size: f.size,
        }))
    }

    /// Addresses as separate fields, or (tcp_send_reset since 6.10) as two sockaddrs.
    fn tuple(&self) -> Result<TupleLayout, LayoutError> {
        let saddr = self
            .format
            .field("saddr")
            .ok_or_else(|| self.missing("saddr"))?;
        if saddr.size == 28 {
            return Ok(TupleLayout {
                encoding: AddrEncoding::Sockaddr as u16,
                saddr: self.field("saddr", &[28])?,
                daddr: self.field("daddr", &[28])?,
                ..TupleLayout::default()
            });
        }
        Ok(TupleLayout {
            encoding: AddrEncoding::Fields as u16,
            _pad: 0,
            sport: self.field("sport", &[2])?,
            dport: self.field("dport", &[2])?,
            // Missing from `tcp_event_sk` records before Linux 5.11: the
            // program then tells the family by the addresses.
            family: self.optional("family", &[2])?.unwrap_or(Field::ABSENT),
            saddr: self.field("saddr", &[4])?,
            daddr: self.field("daddr", &[4])?,
            saddr_v6: self.field("saddr_v6", &[16])?,
            daddr_v6: self.field("daddr_v6", &[16])?,
        })
    }
}

/// `sock:inet_sock_set_state`. `protocol` is a `__u8` before Linux 5.6.
pub fn state_change(format: &TracepointFormat) -> Result<StateChangeLayout, LayoutError> {
    let r = Reader { format };
    Ok(StateChangeLayout {
        skaddr: r.field("skaddr", &[8])?,
        oldstate: r.field("oldstate", &[4])?,
        newstate: r.field("newstate", &[4])?,
        protocol: r.field("protocol", &[1, 2])?,
        tuple: r.tuple()?,
    })
}

/// `tcp:tcp_receive_reset`, `tcp:tcp_destroy_sock`.
pub fn sock(format: &TracepointFormat) -> Result<SockLayout, LayoutError> {
    let r = Reader { format };
    Ok(SockLayout {
        skaddr: r.field("skaddr", &[8])?,
        tuple: r.tuple()?,
    })
}

/// `tcp:tcp_send_reset`; `reason` exists since 6.10.
pub fn send_reset(format: &TracepointFormat) -> Result<SendResetLayout, LayoutError> {
    let r = Reader { format };
    Ok(SendResetLayout {
        skbaddr: r.field("skbaddr", &[8])?,
        skaddr: r.field("skaddr", &[8])?,
        state: r.field("state", &[4])?,
        reason: r.optional("reason", &[4])?.unwrap_or(Field::ABSENT),
        tuple: r.tuple()?,
    })
}

/// `net:netif_receive_skb`.
pub fn net_receive(format: &TracepointFormat) -> Result<NetReceiveLayout, LayoutError> {
    let r = Reader { format };
    Ok(NetReceiveLayout {
        skbaddr: r.field("skbaddr", &[8])?,
    })
}

/// `sock:sock_send_length`, `sock:sock_recv_length`.
pub fn msg_length(format: &TracepointFormat) -> Result<MsgLengthLayout, LayoutError> {
    let r = Reader { format };
    Ok(MsgLengthLayout {
        sk: r.field("sk", &[8])?,
        family: r.field("family", &[2])?,
        protocol: r.field("protocol", &[2])?,
        ret: r.field("ret", &[4])?,
        flags: r.field("flags", &[4])?,
    })
}
