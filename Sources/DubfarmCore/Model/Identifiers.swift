/// A job's id: a positive integer assigned by the database.
package struct JobID: RawRepresentable, Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    package let rawValue: Int64
    package init(rawValue: Int64) { self.rawValue = rawValue }
    package init(_ value: Int64) { self.rawValue = value }
    package var description: String { String(rawValue) }
    package static func < (a: JobID, b: JobID) -> Bool { a.rawValue < b.rawValue }
}

/// One segment of one job.
package struct SegmentRef: Sendable, Hashable, Codable, CustomStringConvertible {
    package let job: JobID
    package let index: Int
    package init(job: JobID, index: Int) {
        self.job = job
        self.index = index
    }
    package var description: String { "\(job)/\(index)" }
}

/// The fencing token of one lease: 16 random bytes, fresh for every lease.
///
/// A result, progress report or failure is accepted only when it carries the token of the
/// segment's current lease, so a late reply from a worker presumed dead never overwrites newer work.
package struct LeaseToken: Sendable, Hashable, Codable, CustomStringConvertible {
    package let high: UInt64
    package let low: UInt64
    package init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }
    /// A fresh random token.
    package static func random() -> LeaseToken {
        var g = SystemRandomNumberGenerator()
        return LeaseToken(high: g.next(), low: g.next())
    }
    /// 32 lowercase hex digits.
    package var description: String { hex(high) + hex(low) }
    /// Parses the 32-hex-digit form.
    package init?(hex s: String) {
        guard s.count == 32, let h = UInt64(s.prefix(16), radix: 16), let l = UInt64(s.suffix(16), radix: 16) else {
            return nil
        }
        self.init(high: h, low: l)
    }
    /// JSON form: 32 hex digits.
    package init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let t = LeaseToken(hex: s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad lease token"))
        }
        self = t
    }
    package func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    private func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
