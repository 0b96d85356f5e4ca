//! CRC-based hashes. `crc32a` is the standard CRC-32 (IEEE); `crc32` is libmemcached's
//! variant that keeps only 15 bits of it; `crc16` is CRC-16/XMODEM with nutcracker's
//! 32-bit state (see [`crc16`]).

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC16: [u16; 256] = crc16_table();

/// CRC-16/XMODEM over the bytes as they are (unsigned): Redis Cluster's key hash.
pub fn crc16_xmodem(key: &[u8]) -> u16 {
    key.iter().fold(0u16, |crc, &b| crc16_step(crc, b))
}

/// CRC-16/XMODEM of what `crc` covered and then `b`.
#[inline(always)]
pub fn crc16_step(crc: u16, b: u8) -> u16 {
    (crc << 8) ^ CRC16[usize::from(((crc >> 8) as u8) ^ b)]
}
static CRC32: [u32; 256] = crc32_table();

/// nutcracker keeps the CRC in a 32-bit variable and never masks it to 16 bits, so
/// the bytes shifted out above bit 15 stay in the result and decide ketama placement.
/// The low 16 bits are the true CRC-16/XMODEM.
pub fn crc16(key: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in key {
        let index = ((crc >> 8) ^ super::signed_byte(b)) & 0xff;
        crc = (crc << 8) ^ CRC16[index as usize] as u32;
    }
    crc
}

fn crc32_ieee(key: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in key {
        crc = (crc >> 8) ^ CRC32[((crc ^ b as u32) & 0xff) as usize];
    }
    !crc
}

/// Only 15 bits survive, so with ketama (whose points span 32 bits) every key
/// falls before the first point and lands on one server, as in nutcracker.
pub fn crc32(key: &[u8]) -> u32 {
    (crc32_ieee(key) >> 16) & 0x7fff
}

pub fn crc32a(key: &[u8]) -> u32 {
    crc32_ieee(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // The catalogue check value of each CRC is its result over "123456789".
        assert_eq!(crc16(b"123456789") & 0xffff, 0x31c3);
        // One byte shifts nothing out yet, so the result is the plain CRC.
        assert!(crc16(b"1") <= 0xffff);
        assert_ne!(crc16(b"123456789") >> 16, 0);
        assert_eq!(crc32a(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"123456789"), (0xcbf4_3926u32 >> 16) & 0x7fff);
        assert_eq!(crc32a(b""), 0);
    }
}
