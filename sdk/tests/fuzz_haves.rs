//! Fuzzing the `haves` stream reader on stable: whatever bytes a neighbour sends, cut into
//! whatever chunks the network delivers, the reader never panics, yields nothing after its first
//! error, and reads the same messages however the bytes are chunked. Real streams (serialised
//! `HaveMsg`s) come back exactly; a bad line ends the stream with one error.

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use shoal::peer::client::haves_from_body;
use shoal::peer::PeerError;
use shoal_proto::{HaveMsg, SegmentKey, MAX_HAVE_LINE};

/// What the reader made of `chunks`: each message, or an error's text.
fn read(chunks: Vec<Vec<u8>>) -> Vec<Result<HaveMsg, String>> {
    let body = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
    );
    futures::executor::block_on(
        haves_from_body(body)
            .map(|item| item.map_err(|e| e.to_string()))
            .collect(),
    )
}

/// `bytes` cut at `cuts` (positions taken modulo the length).
fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (bytes.len() + 1))
        .chain([0, bytes.len()])
        .collect();
    at.sort_unstable();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

fn key() -> impl Strategy<Value = SegmentKey> {
    "[!-~]{1,80}".prop_map(|s| SegmentKey::new(s).expect("printable ASCII is a valid key"))
}

fn msg() -> impl Strategy<Value = HaveMsg> {
    prop_oneof![
        prop::collection::vec(key(), 0..8).prop_map(|segments| HaveMsg::Snapshot { segments }),
        key().prop_map(|segment| HaveMsg::Have { segment }),
        key().prop_map(|segment| HaveMsg::Lost { segment }),
        Just(HaveMsg::Free),
    ]
}

/// Lines a hostile or broken neighbour might send instead of a message.
fn bad_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"{\"t\":\"have\",\"segment\":\"\"}".to_vec()),
        Just(b"{\"t\":\"have\",\"segment\":\"a b\"}".to_vec()),
        Just(b"{\"t\":\"have\",\"segment\":\"a\"".to_vec()),
        Just(b"{\"t\":\"have\"}".to_vec()),
        Just(b"[1,2,3]".to_vec()),
        Just(vec![0xff, 0xfe, b'{']),
        "[ -~]{0,40}".prop_filter_map("parses as a message", |s| {
            HaveMsg::parse_line(s.as_bytes())
                .is_err()
                .then(|| s.into_bytes())
        }),
    ]
}

#[test]
fn a_later_revisions_message_is_skipped_and_the_stream_goes_on() {
    let got = read(vec![br#"{"t":"pieces","segment":"a","bits":"ff"}
{"t":"have","segment":"b"}
{"t":"free"}
"#
    .to_vec()]);
    assert_eq!(
        got,
        vec![
            Ok(HaveMsg::Unknown),
            Ok(HaveMsg::Have {
                segment: SegmentKey::new("b").unwrap()
            }),
            Ok(HaveMsg::Free),
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_read_the_same_whatever_the_chunking(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let whole = read(vec![bytes.clone()]);
        let pieces = read(chunked(&bytes, &cuts));
        if let Some(i) = whole.iter().position(Result::is_err) {
            prop_assert_eq!(i, whole.len() - 1, "items after the first error");
        }
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn real_streams_come_back_exactly_and_a_bad_line_ends_them(
        msgs in prop::collection::vec(msg(), 0..20),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        bad in proptest::option::of(bad_line()),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut bytes = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            bytes.extend(serde_json::to_vec(m).expect("a HaveMsg serialises"));
            if final_newline || i + 1 < msgs.len() || bad.is_some() {
                bytes.extend(eol);
            }
        }
        if let Some(b) = &bad {
            bytes.extend(b);
            bytes.extend(eol);
            // Whatever follows a bad line is never read.
            bytes.extend(br#"{"t":"have","segment":"after"}"#);
            bytes.extend(eol);
        }
        let got = read(chunked(&bytes, &cuts));
        let oks: Vec<HaveMsg> = got.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        prop_assert_eq!(&oks, &msgs);
        prop_assert_eq!(got.len(), msgs.len() + usize::from(bad.is_some()));
        if bad.is_some() {
            prop_assert!(got.last().is_some_and(Result::is_err));
        }
    }
}

#[test]
fn a_line_over_the_limit_ends_the_stream_without_buffering_it_whole() {
    let long = vec![b'a'; MAX_HAVE_LINE + 1];
    let chunks = vec![long[..1000].to_vec(), long[1000..].to_vec(), b"\n".to_vec()];
    let got = read(chunks);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].as_ref().unwrap_err(),
        &PeerError::HaveLineTooLong.to_string()
    );
}
