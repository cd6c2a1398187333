import Engine
import Foundation

/// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
/// header (`{"name": {"dtype", "shape", "data_offsets"}}`), then raw little-endian data.
public enum SafeTensors {
    /// A tensor's element type in the file.
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16"
        var size: Int { self == .f32 ? 4 : 2 }
    }

    /// Reads every tensor of a file, memory-mapped, converting F16 and BF16 to float32.
    /// Throws ``ModelError`` for a truncated or malformed file or an unsupported dtype.
    public static func read(_ url: URL) throws -> [String: Tensor] {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw ModelError(.io, "cannot read \(url.path): \(error.localizedDescription)")
        }
        return try parse(data, name: url.path)
    }

    /// Parses safetensors bytes; `name` is used in error messages.
    public static func parse(_ data: Data, name: String) throws -> [String: Tensor] {
        func bad(_ why: String) -> ModelError { ModelError(.badWeightFile, "\(name): \(why)") }
        guard data.count >= 8 else { throw bad("file is \(data.count) bytes, shorter than the 8-byte header length (truncated?)") }
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [String: Tensor] in
            let n = Int(raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian)
            guard n > 0, 8 + n <= raw.count else { throw bad("header says \(n) bytes but the file has \(raw.count - 8) after the length (truncated?)") }
            let headerBytes = Data(raw[8..<(8 + n)])
            guard let header = try? JSONSerialization.jsonObject(with: headerBytes) as? [String: Any] else {
                throw bad("header is not a JSON object")
            }
            let base = 8 + n
            let available = raw.count - base
            var out: [String: Tensor] = [:]
            for (key, value) in header where key != "__metadata__" {
                guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                      let shape = info["shape"] as? [Int], let offs = info["data_offsets"] as? [Int], offs.count == 2 else {
                    throw bad("tensor '\(key)' has a malformed header entry")
                }
                guard let dtype = DType(rawValue: dt) else {
                    throw ModelError(.unsupportedDType, "\(name): tensor '\(key)' has dtype \(dt); only F32, F16 and BF16 are supported")
                }
                let count = shape.reduce(1, *)
                guard offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == count * dtype.size else {
                    throw bad("tensor '\(key)' of shape \(shape) \(dt) has data_offsets \(offs) of the wrong length")
                }
                guard offs[1] <= available else {
                    throw bad("tensor '\(key)' ends at byte \(offs[1]) but the data section has \(available) bytes (truncated?)")
                }
                let t = Tensor.zeros(shape)
                let src = raw.baseAddress! + base + offs[0]
                switch dtype {
                case .f32:
                    for i in 0..<count { t.data[i] = Float(bitPattern: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
                case .bf16:
                    for i in 0..<count {
                        t.data[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
                    }
                case .f16:
                    for i in 0..<count { t.data[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
                }
                out[key] = t
            }
            return out
        }
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
    public static func serialize(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> Data {
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
            parts.append("\"__metadata__\":{\(m)}")
        }
        var offset = 0
        for (name, t) in tensors {
            let bytes = t.count * 4
            parts.append("\(jsonString(name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        var hb = Array(header.utf8)
        while (8 + hb.count) % 8 != 0 { hb.append(0x20) }
        var out = Data(capacity: 8 + hb.count + offset)
        var len = UInt64(hb.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(contentsOf: hb)
        for (_, t) in tensors {
            out.append(UnsafeBufferPointer(start: t.data, count: t.count))
        }
        return out
    }

    /// Writes tensors atomically (temporary name, then rename).
    public static func write(_ tensors: [(String, Tensor)], to url: URL, metadata: [String: String] = [:]) throws {
        do { try serialize(tensors, metadata: metadata).write(to: url, options: .atomic) } catch {
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
