/// Where a ``PacketBundle``'s packets lie in its encoded bytes, found without copying them.
///
/// ``PacketBundle/init(decoding:)`` copies every packet into an array of its own. The stitch and
/// the result writer move hundreds of megabytes of packets; they use this instead: the bundle's
/// header and per-packet fields are parsed (with the same checks as the decoder), the packet
/// payloads stay where they are, as byte ranges of the buffer the caller owns.
package struct PacketBundleLayout: Sendable, Hashable {
    /// One packet: its timing and flags, and where its bytes lie in the encoded bundle.
    package struct Slice: Sendable, Hashable {
        package var pts: Int64
        package var dts: Int64
        package var duration: Int64
        package var isKey: Bool
        /// Byte offset of the payload from the start of the encoded bundle.
        package var offset: Int
        package var size: Int
    }

    package var codec: CodecParameters
    package var packets: [Slice]

    /// Bytes of a packet's fixed fields before its payload: pts, dts, duration (i64 each), key
    /// flag (u8), payload length (u32).
    package static let packetHeaderSize = 29

    /// Parses the encoded bundle in `raw` (what ``PacketBundle/encoded()`` writes). Throws
    /// ``DubfarmError/Code/protocolViolation`` on anything the decoder would reject: bad magic
    /// or version, lengths past the end, trailing bytes.
    package init(scanning raw: UnsafeRawBufferPointer) throws {
        func fail(_ what: String) -> DubfarmError { DubfarmError(.protocolViolation, "malformed packet bundle: \(what)") }
        // The header (magic, version, codec parameters, count) through ByteReader, from a copy
        // of its first bytes only: codec parameters are small (extradata at most 1 MiB).
        var prefix = min(raw.count, 4096)
        var header: (codec: CodecParameters, count: Int, end: Int)
        while true {
            do {
                let bytes = [UInt8](UnsafeRawBufferPointer(rebasing: raw[0..<prefix]))
                var r = ByteReader(bytes)
                let m = [try r.u8(), try r.u8(), try r.u8(), try r.u8()]
                guard m == PacketBundle.magic else { throw fail("bad magic") }
                let v = try r.u16()
                guard v == PacketBundle.version else {
                    throw DubfarmError(.protocolViolation, "packet bundle version \(v) is not supported (expected \(PacketBundle.version))")
                }
                let codec = try CodecParameters.read(&r)
                let n = Int(try r.u32())
                header = (codec, n, r.offset)
                break
            } catch {
                // Codec parameters longer than the prefix: read further (malformed input ends
                // here too, once the prefix is the whole buffer).
                guard prefix < raw.count else { throw error }
                prefix = min(raw.count, prefix * 16)
            }
        }
        let count = header.count
        guard count <= 1 << 24, count * Self.packetHeaderSize <= raw.count - header.end else { throw fail("count \(count) exceeds message") }
        var packets: [Slice] = []
        packets.reserveCapacity(count)
        var at = header.end
        for _ in 0..<count {
            guard raw.count - at >= Self.packetHeaderSize else { throw fail("truncated packet header") }
            let pts = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self))
            let dts = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 8, as: Int64.self))
            let duration = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 16, as: Int64.self))
            let key = raw[at + 24]
            guard key <= 1 else { throw fail("invalid bool \(key)") }
            let size = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 25, as: UInt32.self)))
            at += Self.packetHeaderSize
            guard size <= raw.count - at else { throw fail("blob of \(size) bytes exceeds message") }
            packets.append(Slice(pts: pts, dts: dts, duration: duration, isKey: key == 1, offset: at, size: size))
            at += size
        }
        guard at == raw.count else { throw fail("\(raw.count - at) trailing bytes") }
        self.codec = header.codec
        self.packets = packets
    }
}

extension PacketBundle {
    /// The bundle's bytes up to its first packet: magic, version, codec parameters, count.
    /// With ``packetHeader(_:)`` and each packet's payload after its header, this is
    /// ``encoded()`` written piecewise (a writer can send the payloads from where they lie).
    package func encodedHeader() -> [UInt8] {
        var w = ByteWriter(capacity: 256 + codec.extradata.count)
        w.raw(Self.magic)
        w.u16(Self.version)
        codec.write(&w)
        w.u32(UInt32(packets.count))
        return w.bytes
    }

    /// Writes packet `p`'s fixed fields (``PacketBundleLayout/packetHeaderSize`` bytes) at `to`.
    package static func packetHeader(_ p: EncodedPacket, to: UnsafeMutableRawPointer) {
        to.storeBytes(of: p.pts.littleEndian, toByteOffset: 0, as: Int64.self)
        to.storeBytes(of: p.dts.littleEndian, toByteOffset: 8, as: Int64.self)
        to.storeBytes(of: p.duration.littleEndian, toByteOffset: 16, as: Int64.self)
        to.storeBytes(of: p.isKey ? 1 : 0, toByteOffset: 24, as: UInt8.self)
        to.storeBytes(of: UInt32(p.data.count).littleEndian, toByteOffset: 25, as: UInt32.self)
    }

    /// The length of ``encoded()``, without encoding.
    package var encodedSize: Int {
        encodedHeader().count + packets.reduce(0) { $0 + PacketBundleLayout.packetHeaderSize + $1.data.count }
    }
}
