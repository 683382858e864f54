//! Just enough TIFF structure reading to find one tag of the first IFD (classic and BigTIFF),
//! for EXIF blocks and TIFF headers, and, for palette TIFFs (classic), to read the colour map and
//! to rewrite the photometric interpretation.

/// The value of `tag` in the first IFD of a TIFF structure starting at `data[0]`: `None` when
/// the tag is absent or the structure cannot be parsed; `Some(0)` when the tag holds other than
/// one BYTE, SHORT or LONG.
pub(crate) fn first_ifd_value(data: &[u8], tag: u16) -> Option<u32> {
    let rd = Reader::new(data)?;
    match rd.u16(2)? {
        42 => {
            let entry = rd.classic_entry(tag)?;
            Some(rd.value(entry + 2, u64::from(rd.u32(entry + 4)?), entry + 8))
        }
        43 => {
            // BigTIFF: 8-byte offsets and counts, 20-byte entries.
            let ifd = usize::try_from(rd.u64(8)?).ok()?;
            let count = usize::try_from(rd.u64(ifd)?).ok()?;
            (0..count.min(65_536)).find_map(|i| {
                let entry = ifd.checked_add(8 + 20 * i)?;
                if rd.u16(entry)? != tag {
                    return None;
                }
                Some(rd.value(entry + 2, rd.u64(entry + 4)?, entry + 12))
            })
        }
        _ => None,
    }
}

/// The SHORT values of `tag` in the first IFD of a classic TIFF (a colour map): `None` when absent,
/// of another type, or out of the data.
pub(crate) fn first_ifd_shorts(data: &[u8], tag: u16) -> Option<Vec<u16>> {
    let rd = Reader::new(data)?;
    let entry = rd.classic_entry(tag)?;
    if rd.u16(entry + 2)? != 3 {
        return None;
    }
    let count = rd.u32(entry + 4)? as usize;
    let at = if count <= 2 { entry + 8 } else { rd.u32(entry + 8)? as usize };
    (0..count).map(|i| rd.u16(at.checked_add(2 * i)?)).collect()
}

/// A copy of a classic TIFF with the first IFD's single SHORT `tag` set to `value`: `None` when the
/// entry is absent or not one SHORT.
pub(crate) fn with_first_ifd_short(data: &[u8], tag: u16, value: u16) -> Option<Vec<u8>> {
    let rd = Reader::new(data)?;
    let entry = rd.classic_entry(tag)?;
    if rd.u16(entry + 2)? != 3 || rd.u32(entry + 4)? != 1 {
        return None;
    }
    let bytes = if rd.little { value.to_le_bytes() } else { value.to_be_bytes() };
    let mut copy = data.to_vec();
    copy.get_mut(entry + 8..entry + 10)?.copy_from_slice(&bytes);
    Some(copy)
}

struct Reader<'a> {
    data: &'a [u8],
    little: bool,
}

impl<'a> Reader<'a> {
    /// A reader in the byte order the TIFF header names (`II` or `MM`).
    fn new(data: &'a [u8]) -> Option<Reader<'a>> {
        let little = match data.get(..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        Some(Reader { data, little })
    }

    /// The offset of the first IFD's entry for `tag` in a classic (not Big) TIFF.
    fn classic_entry(&self, tag: u16) -> Option<usize> {
        if self.u16(2)? != 42 {
            return None;
        }
        let ifd = self.u32(4)? as usize;
        let count = usize::from(self.u16(ifd)?);
        (0..count).map(|i| ifd.checked_add(2 + 12 * i)).find(|&entry| entry.and_then(|e| self.u16(e)) == Some(tag))?
    }

    fn bytes<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.data.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let b = self.bytes::<2>(at)?;
        Some(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b = self.bytes::<4>(at)?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64(&self, at: usize) -> Option<u64> {
        let b = self.bytes::<8>(at)?;
        Some(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }

    /// The value of an entry whose type is at `type_at`, with `count` values stored inline at
    /// `value_at` (a single BYTE, SHORT or LONG always is): 0 when it is not one such value.
    fn value(&self, type_at: usize, count: u64, value_at: usize) -> u32 {
        if count != 1 {
            return 0;
        }
        match self.u16(type_at) {
            Some(1) => self.data.get(value_at).map_or(0, |&b| u32::from(b)),
            Some(3) => self.u16(value_at).map_or(0, u32::from),
            Some(4) => self.u32(value_at).unwrap_or(0),
            _ => 0,
        }
    }
}
