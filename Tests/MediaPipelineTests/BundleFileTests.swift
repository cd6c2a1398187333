import DubfarmCore
import DurableFiles
import FarmTestSupport
import Foundation
import Testing

@Suite("Packet bundle files (written piecewise, read in place)")
struct BundleFileTests {
    @Test("a bundle written with writev is byte for byte its encoding, across write chunks and empty packets",
          arguments: [0, 1, 255, 256, 257, 1000])
    func writtenAsEncoded(packets: Int) throws {
        let dir = try TestMedia.scratch("bundle-write")
        defer { TestMedia.cleanup(dir) }
        let codec = CodecParameters(codecName: "h264", extradata: [1, 2, 3], width: 64, height: 48, pixelFormat: "yuv420p",
                                    timeBase: Rational(1, 25), frameRate: Rational(25, 1))
        var list: [EncodedPacket] = []
        for i in 0..<packets {
            let n: Int = i % 3 == 2 ? 0 : 100 + i
            var data = [UInt8](repeating: 0, count: n)
            for k in 0..<n { data[k] = UInt8(truncatingIfNeeded: k ^ i) }
            list.append(EncodedPacket(pts: Int64(i), dts: Int64(i), duration: 1, isKey: i == 0, data: data))
        }
        let b = PacketBundle(codec: codec, packets: list)
        let path = "\(dir)/seg.dfpb"
        let size = try MediaFile.writeAtomically(bundle: b, to: path)
        let bytes = try MediaFile.read(path: path)
        #expect(bytes == b.encoded())
        #expect(size == bytes.count && size == b.encodedSize)
        #expect(try PacketBundle(decoding: bytes) == b)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["seg.dfpb"])
    }

    @Test("writing into a missing directory fails with the file named and leaves nothing")
    func missingDirectory() throws {
        let b = PacketBundle(codec: CodecParameters(codecName: "h264", width: 2, height: 2, pixelFormat: "yuv420p",
                                                    timeBase: Rational(1, 25), frameRate: Rational(25, 1)), packets: [])
        #expect {
            try MediaFile.writeAtomically(bundle: b, to: "/nonexistent-dubfarm-dir/seg.dfpb")
        } throws: { e in
            (e as? DubfarmError)?.code == .io && (e as? DubfarmError)?.message.contains("seg.dfpb") == true
        }
    }
}
