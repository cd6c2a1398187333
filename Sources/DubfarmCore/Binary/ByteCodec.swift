/// Appends little-endian fixed-width values and length-prefixed blobs to a byte buffer.
///
/// The wire protocol and the media store's small binary files are written with this; the
/// matching ``ByteReader`` checks every length against what is left before it allocates.
package struct ByteWriter: Sendable {
    package private(set) var bytes: [UInt8]

    package init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    package mutating func u8(_ v: UInt8) { bytes.append(v) }
    package mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    package mutating func u16(_ v: UInt16) { append(v) }
    package mutating func u32(_ v: UInt32) { append(v) }
    package mutating func u64(_ v: UInt64) { append(v) }
    package mutating func i32(_ v: Int32) { append(UInt32(bitPattern: v)) }
    package mutating func i64(_ v: Int64) { append(UInt64(bitPattern: v)) }
    package mutating func int(_ v: Int) { i64(Int64(v)) }
    package mutating func f64(_ v: Double) { append(v.bitPattern) }
    package mutating func f32(_ v: Float) { append(v.bitPattern) }

    /// A u32 length followed by the bytes.
    package mutating func blob<C: Collection>(_ v: C) where C.Element == UInt8 {
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }
    /// UTF-8 text as a blob.
    package mutating func string(_ s: String) { blob(Array(s.utf8)) }
    package mutating func optionalString(_ s: String?) {
        bool(s != nil)
        if let s { string(s) }
    }
    /// A u32 count followed by raw little-endian floats.
    package mutating func floats(_ v: [Float]) {
        u32(UInt32(v.count))
        bytes.reserveCapacity(bytes.count + v.count * 4)
        v.withUnsafeBytes { bytes.append(contentsOf: $0) }  // little-endian hosts only (x86-64, arm64)
    }
    package mutating func raw<C: Collection>(_ v: C) where C.Element == UInt8 { bytes.append(contentsOf: v) }

    private mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads what ``ByteWriter`` wrote; every read is bounds-checked and throws
/// ``DubfarmError/Code/protocolViolation`` instead of trapping on malformed input.
package struct ByteReader {
    package let bytes: ArraySlice<UInt8>
    package private(set) var offset: Int

    package init(_ bytes: [UInt8]) {
        self.bytes = bytes[...]
        offset = bytes.startIndex
    }
    package init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        offset = bytes.startIndex
    }

    package var remaining: Int { bytes.endIndex - offset }
    package var isAtEnd: Bool { remaining == 0 }

    private func fail(_ what: String) -> DubfarmError {
        DubfarmError(.protocolViolation, "malformed message: \(what) at byte \(offset - bytes.startIndex) (\(remaining) bytes left)")
    }

    package mutating func u8() throws -> UInt8 {
        guard remaining >= 1 else { throw fail("truncated u8") }
        defer { offset += 1 }
        return bytes[offset]
    }
    package mutating func bool() throws -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        default: throw fail("bad boolean")
        }
    }
    package mutating func u16() throws -> UInt16 { try fixed() }
    package mutating func u32() throws -> UInt32 { try fixed() }
    package mutating func u64() throws -> UInt64 { try fixed() }
    package mutating func i32() throws -> Int32 { Int32(bitPattern: try fixed()) }
    package mutating func i64() throws -> Int64 { Int64(bitPattern: try fixed()) }
    package mutating func int() throws -> Int {
        let v = try i64()
        guard let i = Int(exactly: v) else { throw fail("integer out of range") }
        return i
    }
    /// An integer that must lie in `range`.
    package mutating func int(in range: ClosedRange<Int>, _ what: String) throws -> Int {
        let v = try int()
        guard range.contains(v) else { throw fail("\(what) \(v) outside \(range)") }
        return v
    }
    package mutating func f64() throws -> Double { Double(bitPattern: try fixed()) }
    package mutating func f32() throws -> Float { Float(bitPattern: try fixed()) }

    package mutating func blob(max: Int = Int(UInt32.max)) throws -> ArraySlice<UInt8> {
        let n = Int(try u32())
        guard n <= remaining else { throw fail("blob of \(n) bytes exceeds message") }
        guard n <= max else { throw fail("blob of \(n) bytes exceeds limit \(max)") }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }
    package mutating func bytesArray(max: Int = Int(UInt32.max)) throws -> [UInt8] { Array(try blob(max: max)) }
    package mutating func string(max: Int = 1 << 20) throws -> String {
        let b = try blob(max: max)
        guard let s = String(validating: b, as: UTF8.self) else { throw fail("invalid UTF-8") }
        return s
    }
    package mutating func optionalString(max: Int = 1 << 20) throws -> String? {
        try bool() ? try string(max: max) : nil
    }
    package mutating func floats(max: Int = 1 << 28) throws -> [Float] {
        let n = Int(try u32())
        guard n <= max, n * 4 <= remaining else { throw fail("float array of \(n) exceeds message") }
        var out = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBytes { dst in
            bytes[offset..<offset + n * 4].withUnsafeBytes { src in dst.copyMemory(from: src) }
        }
        offset += n * 4
        return out
    }
    /// A u32 element count that must be plausible given `minElementSize` bytes per element.
    package mutating func count(minElementSize: Int, max: Int = 1 << 24) throws -> Int {
        let n = Int(try u32())
        guard n <= max, n * Swift.max(minElementSize, 0) <= remaining else { throw fail("count \(n) exceeds message") }
        return n
    }
    /// Throws unless every byte was consumed.
    package func expectEnd() throws {
        guard isAtEnd else { throw fail("\(remaining) trailing bytes") }
    }

    private mutating func fixed<T: FixedWidthInteger>() throws -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { throw fail("truncated \(T.self)") }
        var v: T = 0
        for i in 0..<n { v |= T(truncatingIfNeeded: bytes[offset + i]) << (8 * i) }
        offset += n
        return v
    }
}
