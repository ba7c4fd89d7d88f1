//! The connection upgrade: multistream-select picks the protocol, which decides the [`Mode`].

use std::{future, io};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

use crate::{
    config::{Config, EXTENSION_PROTOCOL},
    frame::Mode,
    muxer::Muxer,
};

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
        future::ready(Ok(start(self, socket, protocol, "inbound")))
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
        future::ready(Ok(start(self, socket, protocol, "outbound")))
    }
}

/// Our muxer offered around another one: the extension first, then `other`'s protocols, then
/// plain mplex (unless [`Config::set_plain_mplex_fallback`] turned it off). Built by
/// [`Config::preferred_over`].
///
/// Multistream-select takes the dialer's first protocol that the listener has, so a node that
/// dials with this upgrade gets the extension from peers that have it, `other` (yamux, say) from
/// every other peer that has it, whatever else they have, and plain mplex only from peers that
/// have nothing else. A peer that dials us picks by its own order: one that prefers mplex gets
/// mplex.
#[derive(Debug, Clone)]
pub struct PreferredOver<U> {
    ours: Config,
    other: U,
}

/// A protocol of [`PreferredOver`]: one of ours, or one of the other upgrade's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreferredOverProtocol<I> {
    /// `/mplex-halfclose/1.0.0` or the plain mplex id.
    Ours(&'static str),
    /// One of the other upgrade's protocols.
    Other(I),
}

impl<I: AsRef<str>> AsRef<str> for PreferredOverProtocol<I> {
    fn as_ref(&self) -> &str {
        match self {
            PreferredOverProtocol::Ours(protocol) => protocol,
            PreferredOverProtocol::Other(protocol) => protocol.as_ref(),
        }
    }
}

impl Config {
    /// Offers this muxer around `other`: `/mplex-halfclose/1.0.0`, then `other`'s protocols,
    /// then plain mplex. With yamux as `other` a node keeps yamux with every peer that has it
    /// and gets the extension from peers that have that; with the tuple
    /// `(Config::default, yamux::Config::default)` instead, a peer that offers mplex and yamux
    /// would get plain mplex, the deprecated muxer. In a swarm:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let swarm = libp2p::SwarmBuilder::with_new_identity()
    ///     .with_tokio()
    ///     .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, || {
    ///         libp2p_mplex_halfclose::Config::default().preferred_over(libp2p::yamux::Config::default())
    ///     })?
    ///     .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)?
    ///     .build();
    /// # let _ = swarm;
    /// # Ok(())
    /// # }
    /// ```
    pub fn preferred_over<U>(self, other: U) -> PreferredOver<U> {
        PreferredOver { ours: self, other }
    }
}

impl<U> UpgradeInfo for PreferredOver<U>
where
    U: UpgradeInfo,
{
    type Info = PreferredOverProtocol<U::Info>;
    type InfoIter = Vec<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        let mut protocols = vec![PreferredOverProtocol::Ours(EXTENSION_PROTOCOL)];
        protocols.extend(
            self.other
                .protocol_info()
                .into_iter()
                .map(PreferredOverProtocol::Other),
        );
        if self.ours.plain_mplex_fallback {
            protocols.push(PreferredOverProtocol::Ours(self.ours.mplex_protocol));
        }
        protocols
    }
}

/// The upgrade future of [`PreferredOver`]: ours is ready at once, the other's is its own.
type PreferredOverFuture<C, O, E, F> = futures::future::Either<
    future::Ready<Result<futures::future::Either<Muxer<C>, O>, E>>,
    futures::future::MapOk<F, fn(O) -> futures::future::Either<Muxer<C>, O>>,
>;

impl<C, U> InboundConnectionUpgrade<C> for PreferredOver<U>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: InboundConnectionUpgrade<C>,
{
    type Output = futures::future::Either<Muxer<C>, U::Output>;
    type Error = U::Error;
    type Future = PreferredOverFuture<C, U::Output, U::Error, U::Future>;

    fn upgrade_inbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        use futures::TryFutureExt;
        match protocol {
            PreferredOverProtocol::Ours(protocol) => {
                let muxer = start(self.ours, socket, protocol, "inbound");
                futures::future::Either::Left(future::ready(Ok(futures::future::Either::Left(
                    muxer,
                ))))
            }
            PreferredOverProtocol::Other(protocol) => futures::future::Either::Right(
                self.other
                    .upgrade_inbound(socket, protocol)
                    .map_ok(futures::future::Either::Right as fn(_) -> _),
            ),
        }
    }
}

impl<C, U> OutboundConnectionUpgrade<C> for PreferredOver<U>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: OutboundConnectionUpgrade<C>,
{
    type Output = futures::future::Either<Muxer<C>, U::Output>;
    type Error = U::Error;
    type Future = PreferredOverFuture<C, U::Output, U::Error, U::Future>;

    fn upgrade_outbound(self, socket: C, protocol: Self::Info) -> Self::Future {
        use futures::TryFutureExt;
        match protocol {
            PreferredOverProtocol::Ours(protocol) => {
                let muxer = start(self.ours, socket, protocol, "outbound");
                futures::future::Either::Left(future::ready(Ok(futures::future::Either::Left(
                    muxer,
                ))))
            }
            PreferredOverProtocol::Other(protocol) => futures::future::Either::Right(
                self.other
                    .upgrade_outbound(socket, protocol)
                    .map_ok(futures::future::Either::Right as fn(_) -> _),
            ),
        }
    }
}

/// Our muxer on a socket where `protocol` was negotiated.
fn start<C>(config: Config, socket: C, protocol: &str, direction: &str) -> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mode = config.mode_for(protocol);
    let muxer = Muxer::new(socket, config, mode);
    tracing::debug!(parent: muxer.span(), direction, "connection upgraded");
    muxer
}
