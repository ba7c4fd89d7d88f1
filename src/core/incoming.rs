//! Frames from the peer: what each one does to the connection and its streams.

use bytes::Bytes;

use super::{
    Connection, Event, MAX_CREDIT, MIN_REFUSED_STREAMS_LIMIT, StreamMap,
    stream::{QueueEnd, RecvState, SendState, StreamEntry},
};
use crate::{
    config::MaxBufferBehaviour,
    error::{ConnectionError, ProtocolViolation},
    frame::{Frame, Mode, StreamId},
};

impl Connection {
    /// Processes one frame from the peer. Frames for unknown or finished streams are discarded.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::ProtocolViolation`] if the frame breaks the protocol (the connection
    /// is closed with it, and every stream fails); the connection's error if it had already
    /// ended.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        if let Some(e) = &self.closed {
            return Err(e.clone());
        }
        let extension_only = matches!(
            frame,
            Frame::CloseRead { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::UnknownExtension { .. }
        );
        let result = match frame {
            // The decoder refuses flag 7 in plain mplex; a core fed frames some other way
            // must not answer them with frames plain mplex cannot carry.
            _ if extension_only && self.mode == Mode::PlainMplex => {
                Err(ProtocolViolation::ExtensionFrameInPlainMode)
            }
            Frame::NewStream { id, .. } => self.on_new_stream(id),
            Frame::Data { id, data } => self.on_data(id, data),
            Frame::Close { id } => {
                self.on_close(id);
                Ok(())
            }
            Frame::Reset { id, code } => {
                self.on_reset(id, code);
                Ok(())
            }
            Frame::CloseRead { id, code } => {
                self.on_close_read(id, code);
                Ok(())
            }
            Frame::WindowUpdate { id, credit } => self.on_window_update(id, credit),
            Frame::Ping { nonce } => {
                // Answers are bounded like every control frame (see `wants_frames`).
                self.queue_control(Frame::Pong { nonce });
                Ok(())
            }
            Frame::Pong { nonce } => {
                let now = self.clock();
                if !self.round_trip.on_pong(nonce, now()) {
                    tracing::debug!(nonce, "ignoring a pong that answers no ping");
                }
                Ok(())
            }
            Frame::UnknownExtension { id, op } => {
                tracing::debug!(stream = %id, op, "ignoring unknown extension op");
                Ok(())
            }
        };
        if let Err(violation) = result {
            // The muxer logs it, with violations the decoder finds.
            let error = ConnectionError::ProtocolViolation(violation);
            self.close(error.clone());
            return Err(error);
        }
        Ok(())
    }

    /// The stream a frame from the peer is for, if the peer can know of it: a stream we opened
    /// but have not announced yet is unknown to it (and our answer would precede its NewStream).
    fn on_new_stream(&mut self, id: StreamId) -> Result<(), ProtocolViolation> {
        if self.streams.contains_key(&id) {
            return Err(ProtocolViolation::NewStreamForLiveId(id));
        }
        if self.streams.len() >= self.config.max_num_streams {
            self.refused_in_a_row += 1;
            let limit = MIN_REFUSED_STREAMS_LIMIT.max(self.config.max_num_streams as u64);
            if self.refused_in_a_row > limit {
                return Err(ProtocolViolation::TooManyRefusedStreams(
                    self.refused_in_a_row,
                ));
            }
            tracing::debug!(stream = %id, "refusing inbound stream: stream limit reached");
            self.queue_control(Frame::Reset { id, code: 0 });
            return Ok(());
        }
        self.refused_in_a_row = 0;
        self.insert_stream(id, true);
        self.inbound.push_back(id);
        self.events.push_back(Event::InboundReady);
        Ok(())
    }

    fn on_data(&mut self, id: StreamId, data: Bytes) -> Result<(), ProtocolViolation> {
        let mode = self.mode;
        let Some(entry) = known_stream(&mut self.streams, id) else {
            tracing::trace!(stream = %id, "discarding data for unknown stream");
            return Ok(());
        };
        let len = data.len() as u64;
        // Credit is checked whatever the receive direction's state: a peer never has more
        // than was granted, also after our close-read, its own Close or a reset (PROTOCOL.md,
        // sections 5 and 7). Data the stream no longer reads is then discarded.
        if mode == Mode::Extension {
            entry
                .recv_window
                .on_data(len)
                .map_err(|credit| ProtocolViolation::CreditExceeded {
                    stream: id,
                    credit,
                    len,
                })?;
        }
        if entry.recv != RecvState::Open {
            tracing::trace!(stream = %id, "discarding data for a stream that no longer reads");
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let frames_before = entry.received.frames();
        entry.received.push(data, mode == Mode::Extension);
        let over_stream = entry.received.frames() > self.config.max_buffer_len;
        self.buffered_frames += (entry.received.frames() - frames_before) as u64;
        self.buffered_total += len;
        self.events.push_back(Event::Readable(id));
        if mode == Mode::PlainMplex {
            let over_connection = self.plain_buffer_cost() > self.config.max_connection_buffer;
            if over_stream || over_connection {
                match self.config.max_buffer_behaviour {
                    MaxBufferBehaviour::ResetStream => {
                        tracing::debug!(stream = %id, "receive buffer full: resetting stream");
                        self.reset_stream(id, 0, false);
                    }
                    MaxBufferBehaviour::Block => {
                        tracing::debug!(stream = %id, "receive buffer full: pausing reads");
                        self.blocking_stream = Some(id);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_close(&mut self, id: StreamId) {
        let Some(entry) = known_stream(&mut self.streams, id) else {
            return;
        };
        if !entry.peer_closed {
            entry.peer_closed = true;
            // Wakes a reader (EOF) and a close-read waiting for its CloseRead to go out.
            self.events.push_back(Event::Readable(id));
        }
        if entry.recv == RecvState::Open {
            tracing::trace!(stream = %id, "peer closed its write side");
            entry.recv = RecvState::Finished;
            self.settle_window(id);
        }
    }

    fn on_reset(&mut self, id: StreamId, code: u64) {
        if known_stream(&mut self.streams, id).is_some() {
            tracing::debug!(stream = %id, code, "stream reset by peer");
            self.reset_stream(id, code, true);
        }
    }

    fn on_close_read(&mut self, id: StreamId, code: u64) {
        let Some(entry) = known_stream(&mut self.streams, id) else {
            return;
        };
        if entry.peer_stopped {
            return;
        }
        entry.peer_stopped = true;
        match entry.send {
            SendState::Open => {
                tracing::debug!(stream = %id, code, "peer stopped reading");
                entry.send = SendState::Stopped { code };
                // Answer with our Close so the peer learns the direction is finished. Unsent
                // data is dropped: the peer would discard it.
                self.queue_end(id, QueueEnd::Close);
                self.discard_unsent(id, false);
            }
            SendState::Closed => {
                // Our Close is on its way; the data still queued before it would be discarded.
                tracing::debug!(stream = %id, code, "peer stopped reading after our close");
                self.discard_unsent(id, false);
            }
            SendState::Stopped { .. } | SendState::Reset { .. } => return,
        }
        // Wakes a writer (it fails) and a flush or close waiting for the socket (it is done).
        self.events.push_back(Event::Writable(id));
    }

    fn on_window_update(&mut self, id: StreamId, credit: u64) -> Result<(), ProtocolViolation> {
        let Some(entry) = known_stream(&mut self.streams, id) else {
            return Ok(());
        };
        let total = entry.send_credit.saturating_add(credit);
        if total > MAX_CREDIT {
            return Err(ProtocolViolation::WindowOverflow(id));
        }
        let was_blocked = entry.send_credit == 0;
        entry.send_credit = total;
        if was_blocked {
            self.events.push_back(Event::Writable(id));
        }
        Ok(())
    }
}

/// The stream a frame from the peer is for, if the peer can know of it: a stream we opened but
/// have not announced yet is unknown to it (and an answer would go out before its NewStream).
fn known_stream(streams: &mut StreamMap<StreamEntry>, id: StreamId) -> Option<&mut StreamEntry> {
    streams.get_mut(&id).filter(|entry| entry.announced)
}
