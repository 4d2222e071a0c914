//! gzip (RFC 1952) over DEFLATE (RFC 1951), decode only: cloud-init accepts gzip-compressed
//! user-data and `write_files` entries with `encoding: gz+b64`, and no crate in the tree
//! inflates.
//!
//! Owns [`gunzip`]. The decoder follows the structure of zlib's `puff.c` (canonical Huffman
//! codes decoded bit by bit); it checks the trailer's CRC-32 and length and refuses output
//! over 64 MiB.

const MAX_OUTPUT: usize = 64 << 20;
const MAX_BITS: usize = 15;

/// Decompresses one gzip member.
///
/// # Errors
///
/// When the data is not gzip, is truncated or corrupt, or inflates past 64 MiB.
pub(super) fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b {
        return Err("not gzip data".to_owned());
    }
    if data[2] != 8 {
        return Err("unknown gzip compression method".to_owned());
    }
    let flags = data[3];
    let mut pos = 10;
    let truncated = || "truncated gzip header".to_owned();
    if flags & 0x04 != 0 {
        let len = usize::from(u16::from_le_bytes([
            *data.get(pos).ok_or_else(truncated)?,
            *data.get(pos + 1).ok_or_else(truncated)?,
        ]));
        pos += 2 + len;
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            let end = data[pos.min(data.len())..]
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(truncated)?;
            pos += end + 1;
        }
    }
    if flags & 0x02 != 0 {
        pos += 2;
    }
    let body = data.get(pos..).ok_or_else(truncated)?;
    let (out, used) = inflate(body)?;
    let trailer = body
        .get(used..used + 8)
        .ok_or_else(|| "truncated gzip trailer".to_owned())?;
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("four bytes"));
    let size = u32::from_le_bytes(trailer[4..].try_into().expect("four bytes"));
    if crc != crc32(&out) || size != out.len() as u32 {
        return Err("gzip checksum mismatch".to_owned());
    }
    Ok(out)
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u32,
    count: u32,
}

impl Bits<'_> {
    fn take(&mut self, need: u32) -> Result<u32, String> {
        while self.count < need {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or_else(|| "truncated deflate data".to_owned())?;
            self.pos += 1;
            self.buf |= u32::from(byte) << self.count;
            self.count += 8;
        }
        let value = self.buf & ((1u32 << need) - 1);
        self.buf = if need == 32 { 0 } else { self.buf >> need };
        self.count -= need;
        Ok(value)
    }
}

struct Huffman {
    count: [u16; MAX_BITS + 1],
    symbol: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut count = [0u16; MAX_BITS + 1];
        for len in lengths {
            count[usize::from(*len)] += 1;
        }
        let mut offs = [0u16; MAX_BITS + 1];
        for len in 1..MAX_BITS {
            offs[len + 1] = offs[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (sym, len) in lengths.iter().enumerate() {
            if *len != 0 {
                symbol[usize::from(offs[usize::from(*len)])] = sym as u16;
                offs[usize::from(*len)] += 1;
            }
        }
        Self { count, symbol }
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..=MAX_BITS {
            code |= bits.take(1)? as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return self
                    .symbol
                    .get((index + code - first) as usize)
                    .copied()
                    .ok_or_else(|| "invalid huffman code".to_owned());
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err("invalid huffman code".to_owned())
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Inflates raw DEFLATE data; returns the output and the bytes consumed.
fn inflate(data: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut bits = Bits {
        data,
        pos: 0,
        buf: 0,
        count: 0,
    };
    let mut out = Vec::new();
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => stored(&mut bits, &mut out)?,
            1 => {
                let mut lengths = [0u8; 288];
                lengths[..144].fill(8);
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                lengths[280..].fill(8);
                let lit = Huffman::new(&lengths);
                let dist = Huffman::new(&[5u8; 30]);
                codes(&mut bits, &mut out, &lit, &dist)?;
            }
            2 => {
                let (lit, dist) = dynamic_tables(&mut bits)?;
                codes(&mut bits, &mut out, &lit, &dist)?;
            }
            _ => return Err("invalid deflate block type".to_owned()),
        }
        if last {
            return Ok((out, bits.pos));
        }
    }
}

fn stored(bits: &mut Bits<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    bits.buf = 0;
    bits.count = 0;
    let header = bits
        .data
        .get(bits.pos..bits.pos + 4)
        .ok_or_else(|| "truncated stored block".to_owned())?;
    let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let nlen = u16::from_le_bytes([header[2], header[3]]);
    if nlen != !(len as u16) {
        return Err("corrupt stored block length".to_owned());
    }
    bits.pos += 4;
    let block = bits
        .data
        .get(bits.pos..bits.pos + len)
        .ok_or_else(|| "truncated stored block".to_owned())?;
    out.extend_from_slice(block);
    bits.pos += len;
    check_size(out)
}

fn check_size(out: &[u8]) -> Result<(), String> {
    if out.len() > MAX_OUTPUT {
        return Err("gzip data inflates past 64 MiB".to_owned());
    }
    Ok(())
}

fn codes(
    bits: &mut Bits<'_>,
    out: &mut Vec<u8>,
    lit: &Huffman,
    dist: &Huffman,
) -> Result<(), String> {
    loop {
        let symbol = lit.decode(bits)?;
        match symbol {
            0..=255 => out.push(symbol as u8),
            256 => return check_size(out),
            _ => {
                let i = usize::from(symbol - 257);
                let (base, extra) = LENGTH_BASE
                    .get(i)
                    .zip(LENGTH_EXTRA.get(i))
                    .ok_or_else(|| "invalid length code".to_owned())?;
                let len = usize::from(*base) + bits.take(u32::from(*extra))? as usize;
                let d = usize::from(dist.decode(bits)?);
                let (base, extra) = DIST_BASE
                    .get(d)
                    .zip(DIST_EXTRA.get(d))
                    .ok_or_else(|| "invalid distance code".to_owned())?;
                let distance = usize::from(*base) + bits.take(u32::from(*extra))? as usize;
                if distance > out.len() {
                    return Err("distance too far back".to_owned());
                }
                let start = out.len() - distance;
                for k in 0..len {
                    out.push(out[start + k]);
                }
                check_size(out)?;
            }
        }
    }
}

fn dynamic_tables(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = bits.take(5)? as usize + 257;
    let ndist = bits.take(5)? as usize + 1;
    let ncode = bits.take(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err("bad dynamic block counts".to_owned());
    }
    let mut code_lengths = [0u8; 19];
    for index in ORDER.iter().take(ncode) {
        code_lengths[*index] = bits.take(3)? as u8;
    }
    let code = Huffman::new(&code_lengths);
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < nlen + ndist {
        let symbol = code.decode(bits)?;
        if symbol < 16 {
            lengths[i] = symbol as u8;
            i += 1;
            continue;
        }
        let (value, repeat) = match symbol {
            16 => {
                let previous = *lengths
                    .get(i.wrapping_sub(1))
                    .ok_or_else(|| "repeat with no previous length".to_owned())?;
                (previous, 3 + bits.take(2)? as usize)
            }
            17 => (0, 3 + bits.take(3)? as usize),
            _ => (0, 11 + bits.take(7)? as usize),
        };
        if i + repeat > nlen + ndist {
            return Err("too many code lengths".to_owned());
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    Ok((
        Huffman::new(&lengths[..nlen]),
        Huffman::new(&lengths[nlen..]),
    ))
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let mut crc = 0xffff_ffffu32;
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc ^ 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;

    #[test]
    fn inflates_what_gzip_makes() {
        // `printf 'hello hello hello hello\n' | gzip -9n | base64` (fixed Huffman codes).
        let data = STANDARD
            .decode("H4sIAAAAAAACA8tIzcnJV8hAJ7kAAIhZCxgAAAA=")
            .unwrap();
        assert_eq!(gunzip(&data).unwrap(), b"hello hello hello hello\n");
    }

    #[test]
    fn inflates_dynamic_blocks() {
        // `seq 1 200 | gzip -9n | base64` (dynamic Huffman codes).
        let data = STANDARD
            .decode(concat!(
                "H4sIAAAAAAACAx3SyRHAMAzDwD+qMeW7/8YC58/JsVAoOoPJYnO4pJGQIp0MMskimxxyqUaFKqpTg5rUojZ1",
                "qEtv9NB9ZKcP+qQv+qYf+mU0RhjF8I2DMRmLsRmHcZmNGWYxO9MPmszF3MzDvKzGCqtYnTVYfu9ibdZhXXZj",
                "h13szh7syfZ3NvuwL6dxwilO5wzO5CyOf3s4l9u44Ra3cwd3chd3c8V4GnI0PZogTZEmSdOkidJUabI0dz+b",
                "uwf35B7ds3t4T+/x6RcBU8/XnYYRMSpGxugYIaNkpIyW6S+EOzmjZwSNopE0mkbUqBpZM14xd8pG2mgbcaNu",
                "5I2+ETgKZ7607kSOypE5OkfoKB2po3XEzno34E7vCB7FI3k0j+hRPbJH9+x3LO6kj/YRP+pH/ugfA8QCMUHO",
                "uyp3VogZYocYIpaIKWKLGCPWyH3n9+6v8QGY7yg0tAIAAA==",
            ))
            .unwrap();
        let expected: String = (1..=200).map(|n| format!("{n}\n")).collect();
        assert_eq!(String::from_utf8(gunzip(&data).unwrap()).unwrap(), expected);
    }

    #[test]
    fn refuses_corruption() {
        let mut data = STANDARD
            .decode("H4sIAAAAAAACA8tIzcnJV8hAJ7kAAIhZCxgAAAA=")
            .unwrap();
        let n = data.len();
        data[n - 5] ^= 1;
        assert!(gunzip(&data).is_err());
        assert!(gunzip(b"#cloud-config\n").is_err());
    }
}
