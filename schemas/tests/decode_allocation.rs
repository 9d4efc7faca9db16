//! A record anyone could produce cannot make a consumer reserve memory it
//! claims: building the codec caps what one decoded value may allocate.
//! (Its own test binary: the cap is set once per process.)

use std::time::Duration;

use apache_avro::Schema;
use schemas::codec::MAX_DECODE_ALLOCATION_BYTES;
use schemas::Codec;

/// Avro's zig-zag varint of `n`.
fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
#[allow(deprecated)] // from_avro_datum: the plain datum reader is what a consumer's decode runs
fn a_string_claiming_100_mib_is_refused_before_anything_is_reserved() {
    // Building the codec needs no registry call.
    let _codec = Codec::new("http://127.0.0.1:1/apis/ccompat/v7", Duration::from_secs(1)).expect("codec");
    let schema = Schema::parse_str(r#""string""#).expect("schema");
    let mut datum = varint(100 * 1024 * 1024);
    datum.extend_from_slice(b"short");
    let error = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None).expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains(&MAX_DECODE_ALLOCATION_BYTES.to_string()),
        "refused on the cap ({MAX_DECODE_ALLOCATION_BYTES} bytes), not after allocating: {text}"
    );
}
