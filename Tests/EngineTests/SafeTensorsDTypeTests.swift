import Foundation
import Testing
@testable import VQModel

@Suite("SafeTensors dtypes")
struct SafeTensorsDTypeTests {
    @Test("U8, I32, F32 and F16 round-trip through write and read, with metadata; the float reader widens them")
    func roundTrip() throws {
        let u8 = SafeTensors.RawTensor(u8: [0, 1, 127, 128, 255, 7], shape: [2, 3])
        let i32 = SafeTensors.RawTensor(i32: [0, -1, 2_147_483_647, -2_147_483_648, 42], shape: [5])
        let f32 = SafeTensors.RawTensor(f32: [1.5, -0.0, .infinity, 3.25e-20], shape: [2, 2])
        let f16 = SafeTensors.RawTensor(f16: [1, -2.5, 65504, 1e-7, 0.1], shape: [5])
        let empty = SafeTensors.RawTensor(u8: [], shape: [0, 4])
        let data = SafeTensors.serialize(raw: [("a", u8), ("b", i32), ("c", f32), ("d", f16), ("e", empty)], metadata: ["format": "x/1"])
        let (back, meta) = try SafeTensors.parseRaw(data, name: "rt")
        #expect(meta == ["format": "x/1"])
        #expect(back["a"] == u8 && back["b"] == i32 && back["c"] == f32 && back["d"] == f16 && back["e"] == empty)
        #expect(back["a"]?.u8 == [0, 1, 127, 128, 255, 7])
        #expect(back["b"]?.i32 == [0, -1, 2_147_483_647, -2_147_483_648, 42])
        #expect(back["c"]?.floats.map(\.bitPattern) == [1.5, -0.0, Float.infinity, 3.25e-20].map(\.bitPattern))
        // F16: exact where representable; 1e-7 is a subnormal half (nearest: 2 × 2^-24); 0.1 → 0x2E66.
        #expect(back["d"]?.floats == [1, -2.5, 65504, 2 / 16_777_216, SafeTensors.halfToFloat(0x2E66)])
        #expect(back["d"]?.bytes[8...9] == [0x66, 0x2E])
        // The header names each dtype.
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        let header = String(decoding: data[8..<(8 + n)], as: UTF8.self)
        for d in ["\"U8\"", "\"I32\"", "\"F32\"", "\"F16\""] { #expect(header.contains(d)) }
        // The float reader (model weights) widens every dtype.
        let widened = try SafeTensors.parse(data, name: "rt")
        #expect(widened["a"]!.array == [0, 1, 127, 128, 255, 7] && widened["a"]!.shape == [2, 3])
        #expect(widened["b"]!.array == [0, -1, 2_147_483_647, -2_147_483_648, 42].map(Float.init))
    }

    @Test("float to half rounds to nearest even, saturates to infinity, keeps NaN")
    func halfRounding() {
        #expect(SafeTensors.floatToHalf(1) == 0x3C00)
        #expect(SafeTensors.floatToHalf(1 + 1.0 / 2048) == 0x3C00)          // tie → even
        #expect(SafeTensors.floatToHalf(1 + 3.0 / 2048) == 0x3C02)          // tie → even (up)
        #expect(SafeTensors.floatToHalf(65520) == 0x7C00)                   // rounds past the largest half
        #expect(SafeTensors.floatToHalf(-1e10) == 0xFC00)
        #expect(SafeTensors.floatToHalf(.nan) & 0x7C00 == 0x7C00 && SafeTensors.floatToHalf(.nan) & 0x3FF != 0)
        #expect(SafeTensors.floatToHalf(Float(1) / 16_777_216) == 0x0001)   // smallest subnormal
        #expect(SafeTensors.floatToHalf(Float(1) / 33_554_432) == 0x0000)   // half of it: tie → even (0)
        for h: UInt16 in [0x0001, 0x03FF, 0x0400, 0x3555, 0x7BFF, 0x8001, 0xC100] {
            #expect(SafeTensors.floatToHalf(SafeTensors.halfToFloat(h)) == h)
        }
    }

    @Test("a dtype's byte count must match the shape")
    func wrongLength() {
        #expect(throws: ModelError.self) { _ = try SafeTensors.RawTensor(dtype: .i32, shape: [3], bytes: [0, 0, 0, 0]) }
    }
}
