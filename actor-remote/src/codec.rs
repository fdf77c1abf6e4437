//! How application messages are encoded: MessagePack with field names
//! (`rmp-serde`'s named form), so that a field appended later with
//! `#[serde(default)]` is read as its default from older senders and ignored
//! by older receivers.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value that did not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

/// The wire description of a serde message type under `name`. Called by the
/// code `#[derive(Message)]` generates for `#[message(remote = "name")]`.
#[cfg(feature = "wire")]
pub fn wire<M>(name: &'static str) -> actor_core::Wire<M>
where
    M: actor_core::Message + Serialize + DeserializeOwned,
    M::Reply: Serialize + DeserializeOwned,
{
    fn enc<T: Serialize>(value: &T) -> Result<Vec<u8>, actor_core::CodecError> {
        encode(value).map_err(|e| actor_core::CodecError(e.0))
    }
    fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, actor_core::CodecError> {
        decode(bytes).map_err(|e| actor_core::CodecError(e.0))
    }
    actor_core::Wire {
        name,
        encode: enc::<M>,
        decode: dec::<M>,
        encode_reply: enc::<M::Reply>,
        decode_reply: dec::<M::Reply>,
    }
}

/// Encodes a value as named MessagePack.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Room for a small message up front: one allocation, not one per
    // doubling (this runs for every remote message).
    let mut bytes = Vec::with_capacity(64);
    rmp_serde::encode::write_named(&mut bytes, value).map_err(|e| CodecError(e.to_string()))?;
    Ok(bytes)
}

/// Decodes a value from MessagePack.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OrderV1 {
        id: u64,
        item: String,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OrderV2 {
        id: u64,
        item: String,
        #[serde(default)]
        quantity: u32,
    }

    /// The payload evolution rule of PROTOCOL.md, both ways.
    #[test]
    fn appended_defaulted_fields_evolve_both_ways() {
        let old = OrderV1 { id: 7, item: "tea".into() };
        let new: OrderV2 = decode(&encode(&old).unwrap()).unwrap();
        assert_eq!(new, OrderV2 { id: 7, item: "tea".into(), quantity: 0 });
        let back: OrderV1 = decode(&encode(&OrderV2 { id: 8, item: "jam".into(), quantity: 3 }).unwrap()).unwrap();
        assert_eq!(back, OrderV1 { id: 8, item: "jam".into() });
    }

    #[test]
    fn golden_named_payload() {
        let bytes = encode(&OrderV1 { id: 7, item: "tea".into() }).unwrap();
        // {"id": 7, "item": "tea"}
        assert_eq!(bytes, [0x82, 0xa2, b'i', b'd', 0x07, 0xa4, b'i', b't', b'e', b'm', 0xa3, b't', b'e', b'a']);
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Add(u64);
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Pair(u64, String);
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Ping;
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Cmd {
        Stop,
        Go(u64),
        Move { x: i32 },
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Mixed {
        a: Option<u8>,
        b: Vec<u8>,
    }

    /// Every message shape PROTOCOL.md names, byte for byte, both ways.
    #[test]
    fn golden_message_shapes() {
        fn both<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T, bytes: &[u8]) {
            assert_eq!(encode(&value).unwrap(), bytes, "{value:?}");
            assert_eq!(decode::<T>(bytes).unwrap(), value);
        }
        // A one-field tuple struct (newtype) is its field alone.
        both(Add(1), &[0x01]);
        // A tuple struct of two or more fields is an array.
        both(Pair(1, "x".into()), &[0x92, 0x01, 0xa1, b'x']);
        // A unit struct is an empty array.
        both(Ping, &[0x90]);
        // Enum: a unit variant is its name; others a one-key map.
        both(Cmd::Stop, &[0xa4, b'S', b't', b'o', b'p']);
        both(Cmd::Go(5), &[0x81, 0xa2, b'G', b'o', 0x05]);
        both(Cmd::Move { x: -1 }, &[0x81, 0xa4, b'M', b'o', b'v', b'e', 0x81, 0xa1, b'x', 0xff]);
        // None is nil; a Vec<u8> is an array of integers (not bin).
        both(Mixed { a: None, b: vec![1, 2] }, &[0x82, 0xa1, b'a', 0xc0, 0xa1, b'b', 0x92, 0x01, 0x02]);
        // Replies: `()` is nil, integers their smallest form.
        both((), &[0xc0]);
        both(300u64, &[0xcd, 0x01, 0x2c]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<OrderV1>(&[0xc1, 0xff]).is_err());
    }
}
