import Foundation

/// A statement parameter, sent in PostgreSQL's text format.
///
/// The server infers each parameter's type from the statement; where that is ambiguous, cast in
/// SQL (`$1::bigint`). `nil` in a parameter list is SQL `NULL`.
package enum PostgresValue: Sendable, Hashable {
    case text(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    /// A point in time, sent as an ISO 8601 UTC timestamp with microseconds.
    case timestamp(Date)
    /// Raw bytes for a `bytea` parameter.
    case bytes([UInt8])
    /// JSON text for a `json`/`jsonb` parameter.
    case json(String)
    /// A one-dimensional array literal (`{…}`); elements may be `NULL`.
    case array([PostgresValue?])

    /// The text form PostgreSQL parses.
    package var textForm: String {
        switch self {
        case .text(let s), .json(let s): return s
        case .int(let v): return String(v)
        case .double(let v):
            if v.isNaN { return "NaN" }
            if v.isInfinite { return v > 0 ? "Infinity" : "-Infinity" }
            return String(v)
        case .bool(let b): return b ? "t" : "f"
        case .timestamp(let d): return PostgresDate.format(d)
        case .bytes(let b):
            let digits = Array("0123456789abcdef".utf8)
            var out = [UInt8]("\\x".utf8)
            out.reserveCapacity(2 + b.count * 2)
            for byte in b {
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 15)])
            }
            return String(decoding: out, as: UTF8.self)
        case .array(let items):
            var s = "{"
            for (i, item) in items.enumerated() {
                if i > 0 { s += "," }
                guard let item else {
                    s += "NULL"
                    continue
                }
                let t = item.textForm
                s += "\""
                for c in t.unicodeScalars {
                    if c == "\"" || c == "\\" { s += "\\" }
                    s.unicodeScalars.append(c)
                }
                s += "\""
            }
            return s + "}"
        }
    }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral {
    package init(stringLiteral value: String) { self = .text(value) }
    package init(integerLiteral value: Int) { self = .int(value) }
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    package init(floatLiteral value: Double) { self = .double(value) }
}

/// Converts PostgreSQL's text form of timestamps to and from `Date`, without `DateFormatter`.
///
/// Sessions opened by ``PostgresConnection`` use `TimeZone=UTC` and `DateStyle=ISO`, so values
/// arrive as `2026-11-20 23:37:01.123456+00`.
package enum PostgresDate {
    /// `Date` → `2026-11-20T23:37:01.123456Z`.
    package static func format(_ date: Date) -> String {
        if date == .distantFuture { return "infinity" }
        if date == .distantPast { return "-infinity" }
        let totalMicros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        var secs = totalMicros / 1_000_000
        var micros = totalMicros % 1_000_000
        if micros < 0 {
            micros += 1_000_000
            secs -= 1
        }
        var days = secs / 86_400
        var rem = secs % 86_400
        if rem < 0 {
            rem += 86_400
            days -= 1
        }
        let (y, m, d) = civil(fromDays: days)
        func pad(_ v: Int64, _ n: Int) -> String {
            let s = String(v)
            return s.count >= n ? s : String(repeating: "0", count: n - s.count) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(rem / 3600, 2)):\(pad(rem / 60 % 60, 2)):\(pad(rem % 60, 2)).\(pad(micros, 6))Z"
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]]`, `infinity` and `-infinity`.
    package static func parse(_ text: String) -> Date? {
        if text == "infinity" { return .distantFuture }
        if text == "-infinity" { return .distantPast }
        let b = Array(text.utf8)
        var i = 0
        func number(_ count: Int) -> Int64? {
            guard i + count <= b.count else { return nil }
            var v: Int64 = 0
            for k in 0..<count {
                let c = b[i + k]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
            }
            i += count
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = number(4), expect(45), let mo = number(2), expect(45), let d = number(2) else { return nil }
        var seconds = days(fromCivil: y, mo, d) * 86_400
        var fraction = 0.0
        if i < b.count, b[i] == 32 || b[i] == 84 {  // ' ' or 'T'
            i += 1
            guard let h = number(2), expect(58), let mi = number(2), expect(58), let s = number(2) else { return nil }
            seconds += h * 3600 + mi * 60 + s
            if i < b.count, b[i] == 46 {  // '.'
                i += 1
                var scale = 0.1
                while i < b.count, b[i] >= 48 && b[i] <= 57 {
                    fraction += Double(b[i] - 48) * scale
                    scale /= 10
                    i += 1
                }
            }
            if i < b.count {
                if b[i] == 90 {  // 'Z'
                    i += 1
                } else if b[i] == 43 || b[i] == 45 {  // '+' / '-'
                    let sign: Int64 = b[i] == 43 ? 1 : -1
                    i += 1
                    guard let oh = number(2) else { return nil }
                    var offset = oh * 3600
                    if expect(58) {
                        guard let om = number(2) else { return nil }
                        offset += om * 60
                        if expect(58) {
                            guard let os = number(2) else { return nil }
                            offset += os
                        }
                    }
                    seconds -= sign * offset
                }
            }
        }
        guard i == b.count else { return nil }
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    // Howard Hinnant's civil-calendar algorithms.
    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}
