import Testing
@testable import DubfarmCore

@Suite("Packet bundle layout (zero-copy parsing and piecewise encoding)")
struct PacketBundleLayoutTests {
    static func bundle(packets: Int, extradata: Int = 40) -> PacketBundle {
        var extra = [UInt8](repeating: 0, count: extradata)
        for k in 0..<extradata { extra[k] = UInt8(truncatingIfNeeded: k &* 7) }
        var codec = CodecParameters(codecName: "h264", extradata: extra,
                                    width: 64, height: 48, pixelFormat: "yuv420p", timeBase: Rational(1, 25), frameRate: Rational(25, 1))
        codec.profile = 100
        var ps: [EncodedPacket] = []
        for i in 0..<packets {
            let n: Int = i % 5 == 1 ? 0 : 10 + i * 13
            var data = [UInt8](repeating: 0, count: n)
            for k in 0..<n { data[k] = UInt8(truncatingIfNeeded: k &+ i) }
            let t = Int64(i) * 3
            ps.append(EncodedPacket(pts: t - 5, dts: t - 6, duration: 3, isKey: i % 4 == 0, data: data))
        }
        return PacketBundle(codec: codec, packets: ps)
    }

    static func scan(_ bytes: [UInt8]) throws -> PacketBundleLayout {
        try bytes.withUnsafeBytes { try PacketBundleLayout(scanning: $0) }
    }

    @Test("the layout of an encoded bundle names every packet's timing, flags and bytes", arguments: [0, 1, 7, 300])
    func matchesDecoding(packets: Int) throws {
        let b = Self.bundle(packets: packets)
        let bytes = b.encoded()
        let layout = try Self.scan(bytes)
        #expect(layout.codec == b.codec)
        #expect(layout.packets.count == b.packets.count)
        for (s, p) in zip(layout.packets, b.packets) {
            #expect(s.pts == p.pts && s.dts == p.dts && s.duration == p.duration && s.isKey == p.isKey)
            #expect(Array(bytes[s.offset..<(s.offset + s.size)]) == p.data)
        }
        #expect(b.encodedSize == bytes.count)
    }

    @Test("codec headers longer than the first read are parsed too")
    func longExtradata() throws {
        let b = Self.bundle(packets: 3, extradata: 70_000)
        let layout = try Self.scan(b.encoded())
        #expect(layout.codec == b.codec && layout.packets.count == 3)
    }

    @Test("the piecewise encoding (header, then each packet's header and payload) is the encoding")
    func piecewise() {
        let b = Self.bundle(packets: 9)
        var bytes = b.encodedHeader()
        for p in b.packets {
            var head = [UInt8](repeating: 0, count: PacketBundleLayout.packetHeaderSize)
            head.withUnsafeMutableBytes { PacketBundle.packetHeader(p, to: $0.baseAddress!) }
            bytes += head + p.data
        }
        #expect(bytes == b.encoded())
    }

    @Test("malformed bundles are rejected as the decoder rejects them, without a crash")
    func malformed() throws {
        let bytes = Self.bundle(packets: 5).encoded()
        // Every truncation.
        for n in 0..<bytes.count {
            #expect(throws: DubfarmError.self) { try Self.scan(Array(bytes[0..<n])) }
        }
        #expect(throws: DubfarmError.self) { try Self.scan(bytes + [0]) }
        var magic = bytes
        magic[0] = UInt8(ascii: "X")
        #expect(throws: DubfarmError.self) { try Self.scan(magic) }
        var version = bytes
        version[4] = 9
        #expect(throws: DubfarmError.self) { try Self.scan(version) }
        // A packet length running past the end.
        let layout = try Self.scan(bytes)
        var long = bytes
        let at = layout.packets[2].offset - 4
        long[at + 3] = 0x7f
        #expect(throws: DubfarmError.self) { try Self.scan(long) }
        // A key flag that is not a bool.
        var flag = bytes
        flag[layout.packets[0].offset - 5] = 2
        #expect(throws: DubfarmError.self) { try Self.scan(flag) }
    }
}
