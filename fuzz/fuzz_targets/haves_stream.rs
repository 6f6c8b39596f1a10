//! The `haves` stream reader: any body, cut into chunks at the positions the first bytes pick,
//! reads the same as in one piece, and nothing follows the first error.
#![no_main]

use bytes::Bytes;
use futures::StreamExt;
use shoal::peer::client::haves_from_body;

fn read(chunks: Vec<Bytes>) -> Vec<Result<shoal_proto::HaveMsg, String>> {
    let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    futures::executor::block_on(
        haves_from_body(body)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect(),
    )
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = read(vec![Bytes::copy_from_slice(body)]);
    if let Some(i) = whole.iter().position(Result::is_err) {
        assert_eq!(i, whole.len() - 1, "items after the first error");
    }
    let step = usize::from(cut).max(1);
    let pieces = body.chunks(step).map(Bytes::copy_from_slice).collect();
    assert_eq!(whole, read(pieces), "chunking changed what was read");
});
