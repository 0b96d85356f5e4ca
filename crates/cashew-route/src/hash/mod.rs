//! The twelve key hash functions of nutcracker's `hash:` setting.
//!
//! Each one reproduces nutcracker 0.5.0 bit for bit, quirks included, because the
//! hash decides which server holds a key: a different value empties the cache on
//! switch-over. The quirks are noted where they are implemented.

mod crc;
mod fnv;
mod hsieh;
mod jenkins;
mod md5;
mod murmur;
mod one_at_a_time;

use std::fmt;
use std::str::FromStr;

/// A key hash function, named as in `nutcracker.yml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashFunction {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a64,
    Fnv1_32,
    Fnv1a32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashFunction {
    /// Every hash function, in nutcracker's order.
    pub const ALL: [HashFunction; 12] = [
        HashFunction::OneAtATime,
        HashFunction::Md5,
        HashFunction::Crc16,
        HashFunction::Crc32,
        HashFunction::Crc32a,
        HashFunction::Fnv1_64,
        HashFunction::Fnv1a64,
        HashFunction::Fnv1_32,
        HashFunction::Fnv1a32,
        HashFunction::Hsieh,
        HashFunction::Murmur,
        HashFunction::Jenkins,
    ];

    /// The name used in `nutcracker.yml`.
    pub const fn name(self) -> &'static str {
        match self {
            HashFunction::OneAtATime => "one_at_a_time",
            HashFunction::Md5 => "md5",
            HashFunction::Crc16 => "crc16",
            HashFunction::Crc32 => "crc32",
            HashFunction::Crc32a => "crc32a",
            HashFunction::Fnv1_64 => "fnv1_64",
            HashFunction::Fnv1a64 => "fnv1a_64",
            HashFunction::Fnv1_32 => "fnv1_32",
            HashFunction::Fnv1a32 => "fnv1a_32",
            HashFunction::Hsieh => "hsieh",
            HashFunction::Murmur => "murmur",
            HashFunction::Jenkins => "jenkins",
        }
    }

    /// Hashes `key` exactly as nutcracker 0.5.0 does.
    #[inline]
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashFunction::OneAtATime => one_at_a_time::one_at_a_time(key),
            HashFunction::Md5 => md5::md5(key),
            HashFunction::Crc16 => crc::crc16(key),
            HashFunction::Crc32 => crc::crc32(key),
            HashFunction::Crc32a => crc::crc32a(key),
            HashFunction::Fnv1_64 => fnv::fnv1_64(key),
            HashFunction::Fnv1a64 => fnv::fnv1a_64(key),
            HashFunction::Fnv1_32 => fnv::fnv1_32(key),
            HashFunction::Fnv1a32 => fnv::fnv1a_32(key),
            HashFunction::Hsieh => hsieh::hsieh(key),
            HashFunction::Murmur => murmur::murmur(key),
            HashFunction::Jenkins => jenkins::jenkins(key),
        }
    }
}

impl Default for HashFunction {
    /// nutcracker's default, `fnv1a_64`.
    fn default() -> Self {
        HashFunction::Fnv1a64
    }
}

impl fmt::Display for HashFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashFunction {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashFunction::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or(UnknownName)
    }
}

/// A name that is not one of the known hash functions or distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownName;

/// nutcracker hashes keys through `char`, which is signed on x86: bytes of 0x80 and
/// above are sign-extended before they are mixed in.
#[inline(always)]
fn signed_byte(b: u8) -> u32 {
    b as i8 as i32 as u32
}

pub use crc::{crc16_step, crc16_xmodem};
pub use md5::md5_digest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for h in HashFunction::ALL {
            assert_eq!(h.name().parse::<HashFunction>(), Ok(h));
        }
        assert_eq!("fnv1a".parse::<HashFunction>(), Err(UnknownName));
        assert_eq!(HashFunction::default(), HashFunction::Fnv1a64);
    }

    #[test]
    fn signed_byte_sign_extends() {
        assert_eq!(signed_byte(0x41), 0x41);
        assert_eq!(signed_byte(0xc3), 0xffff_ffc3);
    }
}
