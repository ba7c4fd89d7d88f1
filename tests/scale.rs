//! Many streams on one connection.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_mplex_halfclose::Config;
use test_support::driven::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_streams_on_one_connection() {
    const STREAMS: usize = 10_000;
    for mode in both_modes() {
        within(async {
            let mut config = Config::default();
            config.set_max_num_streams(STREAMS);
            let (a, mut b) = driven_pair(mode, config);
            // All streams are opened and written to before any is answered: all are open at once.
            let mut opened = Vec::with_capacity(STREAMS);
            for i in 0..STREAMS {
                let mut s = a.open().await;
                s.write_all(&(i as u64).to_be_bytes()).await.unwrap();
                s.close_write().await.unwrap();
                opened.push(s);
            }
            let server = tokio::spawn(async move {
                let mut accepted = Vec::with_capacity(STREAMS);
                for _ in 0..STREAMS {
                    accepted.push(b.accept().await);
                }
                for s in &mut accepted {
                    let mut request = Vec::new();
                    s.read_to_end(&mut request).await.unwrap();
                    let n = u64::from_be_bytes(request.try_into().unwrap());
                    s.write_all(&(n * 3).to_be_bytes()).await.unwrap();
                    s.close_write().await.unwrap();
                }
                accepted
            });
            for (i, s) in opened.iter_mut().enumerate() {
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).await.unwrap();
                assert_eq!(u64::from_be_bytes(answer.try_into().unwrap()), i as u64 * 3);
            }
            let accepted = server.await.unwrap();
            assert_eq!(accepted.len(), STREAMS);
        })
        .await;
    }
}
