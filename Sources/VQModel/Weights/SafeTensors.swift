import Engine
import Foundation

/// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
/// header (`{"name": {"dtype", "shape", "data_offsets"}}`), then raw little-endian data.
/// Dtypes F32, F16, BF16, U8 and I32: ``read(_:)`` widens them all to float32 (model weights),
/// ``readRaw(_:)`` keeps them as stored (datasets).
package enum SafeTensors {
    /// A tensor's element type in the file.
    package enum DType: String, Sendable, Hashable, CaseIterable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", u8 = "U8", i32 = "I32"
        /// Bytes per element.
        package var size: Int {
            switch self {
            case .f32, .i32: return 4
            case .f16, .bf16: return 2
            case .u8: return 1
            }
        }
    }

    /// One tensor as the file holds it: dtype, shape and little-endian element bytes.
    package struct RawTensor: Sendable, Hashable {
        package let dtype: DType
        package let shape: [Int]
        /// `shape.reduce(1, *) × dtype.size` bytes, little-endian.
        package let bytes: [UInt8]

        /// Elements in the tensor.
        package var count: Int { shape.reduce(1, *) }

        /// Throws ``ModelError`` (`badWeightFile`) when the byte count does not match the shape.
        package init(dtype: DType, shape: [Int], bytes: [UInt8]) throws {
            guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) * dtype.size == bytes.count else {
                throw ModelError(.badWeightFile, "a \(dtype.rawValue) tensor of shape \(shape) needs \(shape.reduce(1, *) * dtype.size) bytes, not \(bytes.count)")
            }
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        /// A U8 tensor.
        package init(u8 values: [UInt8], shape: [Int]) {
            precondition(shape.reduce(1, *) == values.count, "RawTensor: \(values.count) values for shape \(shape)")
            dtype = .u8
            self.shape = shape
            bytes = values
        }

        /// An I32 tensor.
        package init(i32 values: [Int32], shape: [Int]) {
            precondition(shape.reduce(1, *) == values.count, "RawTensor: \(values.count) values for shape \(shape)")
            dtype = .i32
            self.shape = shape
            bytes = values.withUnsafeBufferPointer { v in RawTensor.littleEndianBytes(v.count * 4) { p in
                for (i, x) in v.enumerated() { p.storeBytes(of: UInt32(bitPattern: x).littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            } }
        }

        /// An F32 tensor.
        package init(f32 values: [Float], shape: [Int]) {
            precondition(shape.reduce(1, *) == values.count, "RawTensor: \(values.count) values for shape \(shape)")
            dtype = .f32
            self.shape = shape
            bytes = values.withUnsafeBufferPointer { v in RawTensor.littleEndianBytes(v.count * 4) { p in
                for (i, x) in v.enumerated() { p.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            } }
        }

        /// An F16 tensor: each value rounded to the nearest half (ties to even; overflow to ±∞).
        package init(f16 values: [Float], shape: [Int]) {
            precondition(shape.reduce(1, *) == values.count, "RawTensor: \(values.count) values for shape \(shape)")
            dtype = .f16
            self.shape = shape
            bytes = values.withUnsafeBufferPointer { v in RawTensor.littleEndianBytes(v.count * 2) { p in
                for (i, x) in v.enumerated() { p.storeBytes(of: SafeTensors.floatToHalf(x).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            } }
        }

        /// An F32 tensor of an engine tensor's values.
        package init(_ t: Tensor) {
            self.init(f32: t.array, shape: t.shape)
        }

        /// The elements of a U8 tensor (nil for other dtypes).
        package var u8: [UInt8]? { dtype == .u8 ? bytes : nil }

        /// The elements of an I32 tensor (nil for other dtypes).
        package var i32: [Int32]? {
            guard dtype == .i32 else { return nil }
            return bytes.withUnsafeBytes { raw in
                (0..<count).map { Int32(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
            }
        }

        /// Every element as a Float, whatever the dtype (exact for U8, F16, BF16 and F32; I32
        /// values beyond ±2^24 are rounded).
        package var floats: [Float] {
            bytes.withUnsafeBytes { raw in
                var out = [Float](repeating: 0, count: count)
                out.withUnsafeMutableBufferPointer { SafeTensors.widen(raw.baseAddress!, dtype: dtype, count: count, into: $0.baseAddress!) }
                return out
            }
        }

        static func littleEndianBytes(_ n: Int, _ fill: (UnsafeMutableRawPointer) -> Void) -> [UInt8] {
            [UInt8](unsafeUninitializedCapacity: n) { buf, initialised in
                if n > 0 { fill(UnsafeMutableRawPointer(buf.baseAddress!)) }
                initialised = n
            }
        }
    }

    /// Reads every tensor of a file, memory-mapped, converting F16, BF16, U8 and I32 to float32.
    /// Throws ``ModelError`` for a truncated or malformed file or an unsupported dtype.
    package static func read(_ url: URL) throws -> [String: Tensor] {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw ModelError(.io, "cannot read \(url.path): \(error.localizedDescription)")
        }
        return try parse(data, name: url.path)
    }

    /// Parses safetensors bytes (every tensor widened to float32); `name` is used in error messages.
    package static func parse(_ data: Data, name: String) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        try forEachTensor(data, name: name) { key, dtype, shape, src in
            let t = Tensor.zeros(shape)
            widen(src, dtype: dtype, count: t.count, into: t.data)
            out[key] = t
        }
        return out
    }

    /// Reads every tensor of a file as stored (dtype, shape, bytes), with the header's
    /// `__metadata__` map. Throws ``ModelError`` as ``read(_:)`` does.
    package static func readRaw(_ url: URL) throws -> (tensors: [String: RawTensor], metadata: [String: String]) {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw ModelError(.io, "cannot read \(url.path): \(error.localizedDescription)")
        }
        return try parseRaw(data, name: url.path)
    }

    /// Parses safetensors bytes, keeping each tensor's dtype; `name` is used in error messages.
    package static func parseRaw(_ data: Data, name: String) throws -> (tensors: [String: RawTensor], metadata: [String: String]) {
        var out: [String: RawTensor] = [:]
        let metadata = try forEachTensor(data, name: name) { key, dtype, shape, src in
            let n = shape.reduce(1, *) * dtype.size
            out[key] = try RawTensor(dtype: dtype, shape: shape, bytes: [UInt8](UnsafeRawBufferPointer(start: src, count: n)))
        }
        return (out, metadata)
    }

    /// Checks the header and calls `body(name, dtype, shape, bytes)` for every tensor; returns the
    /// `__metadata__` map (string values only).
    @discardableResult
    static func forEachTensor(_ data: Data, name: String,
                              _ body: (String, DType, [Int], UnsafeRawPointer) throws -> Void) throws -> [String: String] {
        func bad(_ why: String) -> ModelError { ModelError(.badWeightFile, "\(name): \(why)") }
        guard data.count >= 8 else { throw bad("file is \(data.count) bytes, shorter than the 8-byte header length (truncated?)") }
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [String: String] in
            let n = Int(raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian)
            guard n > 0, 8 + n <= raw.count else { throw bad("header says \(n) bytes but the file has \(raw.count - 8) after the length (truncated?)") }
            let headerBytes = Data(raw[8..<(8 + n)])
            guard let header = try? JSONSerialization.jsonObject(with: headerBytes) as? [String: Any] else {
                throw bad("header is not a JSON object")
            }
            let base = 8 + n
            let available = raw.count - base
            for (key, value) in header where key != "__metadata__" {
                guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                      let shape = info["shape"] as? [Int], let offs = info["data_offsets"] as? [Int], offs.count == 2 else {
                    throw bad("tensor '\(key)' has a malformed header entry")
                }
                guard let dtype = DType(rawValue: dt) else {
                    throw ModelError(.unsupportedDType, "\(name): tensor '\(key)' has dtype \(dt); only F32, F16, BF16, U8 and I32 are supported")
                }
                let count = shape.reduce(1, *)
                guard shape.allSatisfy({ $0 >= 0 }), offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == count * dtype.size else {
                    throw bad("tensor '\(key)' of shape \(shape) \(dt) has data_offsets \(offs) of the wrong length")
                }
                guard offs[1] <= available else {
                    throw bad("tensor '\(key)' ends at byte \(offs[1]) but the data section has \(available) bytes (truncated?)")
                }
                try body(key, dtype, shape, raw.baseAddress! + base + offs[0])
            }
            var metadata: [String: String] = [:]
            if let m = header["__metadata__"] as? [String: Any] {
                for (k, v) in m { if let s = v as? String { metadata[k] = s } }
            }
            return metadata
        }
    }

    /// Converts `count` little-endian elements of `dtype` at `src` to Float.
    static func widen(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .f32:
            for i in 0..<count { dst[i] = Float(bitPattern: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
        case .bf16:
            for i in 0..<count {
                dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
            }
        case .f16:
            for i in 0..<count { dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
        case .u8:
            for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
        case .i32:
            for i in 0..<count {
                dst[i] = Float(Int32(bitPattern: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian))
            }
        }
    }

    /// Float to IEEE half, rounded to nearest (ties to even), including subnormals; overflow
    /// gives ±∞ and NaN stays NaN.
    static func floatToHalf(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exp = Int((bits >> 23) & 0xFF)
        let mant = bits & 0x7F_FFFF
        if exp == 0xFF { return sign | 0x7C00 | (mant != 0 ? 0x200 | UInt16(mant >> 13) : 0) }
        let e = exp - 127 + 15
        if e >= 31 { return sign | 0x7C00 }
        if e <= 0 {
            // Subnormal half (or zero): shift the full significand, then round to nearest even.
            if e < -10 { return sign }
            let m = mant | 0x80_0000
            let shift = UInt32(14 - e)
            let half = m >> shift
            let rem = m & ((1 << shift) - 1), mid = UInt32(1) << (shift - 1)
            let rounded = half + ((rem > mid || (rem == mid && half & 1 == 1)) ? 1 : 0)
            return sign | UInt16(rounded)
        }
        let half = UInt32(e) << 10 | (mant >> 13)
        let rem = mant & 0x1FFF
        // Rounding may carry into the exponent, which is still the right answer (up to ∞).
        let rounded = half + ((rem > 0x1000 || (rem == 0x1000 && half & 1 == 1)) ? 1 : 0)
        return sign | UInt16(rounded)
    }

    /// The `__metadata__` map of a file's header (empty when it has none), without reading any
    /// tensor data. Non-string values are skipped (the format allows only strings).
    package static func readMetadata(_ url: URL) throws -> [String: String] {
        func bad(_ why: String) -> ModelError { ModelError(.badWeightFile, "\(url.path): \(why)") }
        guard let h = FileHandle(forReadingAtPath: url.path) else { throw ModelError(.io, "cannot read \(url.path)") }
        defer { try? h.close() }
        let lengthBytes = (try? h.read(upToCount: 8)) ?? Data()
        guard lengthBytes.count == 8 else { throw bad("shorter than the 8-byte header length (truncated?)") }
        let n = lengthBytes.withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self).littleEndian) }
        guard n > 0, n < 1 << 30, let header = try? h.read(upToCount: n), header.count == n,
              let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
            throw bad("header is not a JSON object (truncated?)")
        }
        return ((json["__metadata__"] as? [String: Any]) ?? [:]).compactMapValues { $0 as? String }
    }

    /// IEEE half to float, including subnormals, infinities and NaN.
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int(h >> 10) & 0x1F
        let mant = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(mant) * Float(sign != 0 ? -1 : 1) / 16_777_216 // 2^-24
            return v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | (UInt32(exp + 112) << 23) | (mant << 13))
    }

    /// Serialises tensors (as F32, in the given order) with an optional metadata map. Equal
    /// inputs give identical bytes.
    package static func serialize(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> Data {
        serialize(raw: tensors.map { ($0.0, RawTensor($0.1)) }, metadata: metadata)
    }

    /// Serialises tensors of any supported dtype, in the given order, with an optional metadata
    /// map. Equal inputs give identical bytes.
    package static func serialize(raw tensors: [(String, RawTensor)], metadata: [String: String] = [:]) -> Data {
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
            parts.append("\"__metadata__\":{\(m)}")
        }
        var offset = 0
        for (name, t) in tensors {
            let bytes = t.bytes.count
            parts.append("\(jsonString(name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        var hb = Array(header.utf8)
        while (8 + hb.count) % 8 != 0 { hb.append(0x20) }
        var out = Data(capacity: 8 + hb.count + offset)
        var len = UInt64(hb.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(contentsOf: hb)
        for (_, t) in tensors { out.append(contentsOf: t.bytes) }
        return out
    }

    /// Writes tensors atomically (temporary name, then rename).
    package static func write(_ tensors: [(String, Tensor)], to url: URL, metadata: [String: String] = [:]) throws {
        do { try serialize(tensors, metadata: metadata).write(to: url, options: .atomic) } catch {
            throw ModelError(.io, "cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    /// Writes tensors of any supported dtype atomically (temporary name, then rename).
    package static func write(raw tensors: [(String, RawTensor)], to url: URL, metadata: [String: String] = [:]) throws {
        do { try serialize(raw: tensors, metadata: metadata).write(to: url, options: .atomic) } catch {
            throw ModelError(.io, "cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    static func jsonString(_ s: String) -> String {
        var r = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case _ where u.value < 0x20: r += String(format: "\\u%04x", u.value)
            default: r.unicodeScalars.append(u)
            }
        }
        return r + "\""
    }
}
