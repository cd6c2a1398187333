/// A job's id: a positive integer assigned by the database.
public struct JobID: RawRepresentable, Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public let rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ value: Int64) { self.rawValue = value }
    public var description: String { String(rawValue) }
    public static func < (a: JobID, b: JobID) -> Bool { a.rawValue < b.rawValue }
}

/// One segment of one job.
public struct SegmentRef: Sendable, Hashable, Codable, CustomStringConvertible {
    public let job: JobID
    public let index: Int
    public init(job: JobID, index: Int) {
        self.job = job
        self.index = index
    }
    public var description: String { "\(job)/\(index)" }
}

/// The fencing token of one lease: 16 random bytes, fresh for every lease.
///
/// A result, progress report or failure is accepted only when it carries the token of the
/// segment's current lease, so a late reply from a worker presumed dead never overwrites newer work.
public struct LeaseToken: Sendable, Hashable, Codable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }
    /// A fresh random token.
    public static func random() -> LeaseToken {
        var g = SystemRandomNumberGenerator()
        return LeaseToken(high: g.next(), low: g.next())
    }
    /// 32 lowercase hex digits.
    public var description: String { hex(high) + hex(low) }
    /// Parses the 32-hex-digit form.
    public init?(hex s: String) {
        guard s.count == 32, let h = UInt64(s.prefix(16), radix: 16), let l = UInt64(s.suffix(16), radix: 16) else {
            return nil
        }
        self.init(high: h, low: l)
    }
    /// JSON form: 32 hex digits.
    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let t = LeaseToken(hex: s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad lease token"))
        }
        self = t
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    private func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
