//! The connection upgrade: multistream-select picks the protocol, which decides the [`Mode`].

use std::{future, io};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

use crate::{Config, Muxer, config::EXTENSION_PROTOCOL, frame::Mode};

impl Config {
    fn mode_for(&self, protocol: &str) -> Mode {
        if protocol == EXTENSION_PROTOCOL {
            Mode::Extension
        } else {
            Mode::PlainMplex
        }
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = Vec<&'static str>;

    /// `/mplex-halfclose/1.0.0`, then (unless the fallback is off) the plain mplex id.
    fn protocol_info(&self) -> Self::InfoIter {
        let mut protocols = vec![EXTENSION_PROTOCOL];
        if self.plain_mplex_fallback {
            protocols.push(self.mplex_protocol);
        }
        protocols
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Muxer<C>, io::Error>>;

    /// Starts the muxer on the negotiated socket, in the mode the protocol id names. Never
    /// fails: a peer that offers none of our ids fails earlier, in multistream-select.
    fn upgrade_inbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        let mode = self.mode_for(protocol);
        let muxer = Muxer::new(socket, self, mode);
        tracing::debug!(parent: muxer.span(), "inbound connection upgraded");
        future::ready(Ok(muxer))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Muxer<C>, io::Error>>;

    /// Starts the muxer on the negotiated socket, in the mode the protocol id names. Never
    /// fails: a peer that accepts none of our ids fails earlier, in multistream-select.
    fn upgrade_outbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        let mode = self.mode_for(protocol);
        let muxer = Muxer::new(socket, self, mode);
        tracing::debug!(parent: muxer.span(), "outbound connection upgraded");
        future::ready(Ok(muxer))
    }
}
