import DubfarmCore
import Foundation

/// Protocol names and versions: the first frame of every message.
package enum ProtocolName {
    /// Coordinator ↔ worker (binary headers since version 2; personalisation since 3; its
    /// data-parallel gang and TRAIN-LEFT since 4; the video's rotation in TASK since 5: docs/protocol.md).
    package static let work = "DUBFARM-WORK/6"
    /// CLI ↔ coordinator.
    package static let control = "DUBFARM-CTL/1"
}

/// Limits the decoder enforces before it allocates anything large.
package struct ProtocolLimits: Sendable, Hashable {
    /// Largest header accepted.
    package var maxHeaderBytes: Int = 1 << 20
    /// Largest binary payload frame accepted (libzmq also refuses bigger messages on the socket).
    package var maxPayloadBytes: Int = 1 << 30
    /// Largest whole message (all frames together) accepted: `limits.max_message_bytes`, which
    /// libzmq also enforces per frame on the sockets (`ZMQ_MAXMSGSIZE`) before allocating.
    package var maxMessageBytes: Int = 1 << 30
    package init() {}

    /// Throws unless the frames together stay within ``maxMessageBytes``; checked before anything
    /// is parsed or copied.
    func checkSize(_ frames: [[UInt8]], _ what: String) throws {
        var total = 0
        for f in frames { total += f.count }
        guard total <= maxMessageBytes else {
            throw DubfarmError(.protocolViolation, "\(what) of \(total) bytes exceeds the limit of \(maxMessageBytes) bytes (limits.max_message_bytes)")
        }
    }
    package static let `default` = ProtocolLimits()
}

enum Wire {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .secondsSince1970
        return e
    }()
    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        return d
    }()

    static func header<T: Encodable>(_ v: T) -> [UInt8] {
        // Encoding our own Codable types cannot fail.
        Array(try! encoder.encode(v))
    }

    static func decodeHeader<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], command: String, limits: ProtocolLimits) throws -> T {
        guard bytes.count <= limits.maxHeaderBytes else {
            throw DubfarmError(.protocolViolation, "\(command): header of \(bytes.count) bytes exceeds \(limits.maxHeaderBytes)")
        }
        do {
            return try decoder.decode(T.self, from: Data(bytes))
        } catch {
            throw DubfarmError(.protocolViolation, "\(command): malformed header (\(Self.describe(error)))")
        }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let k, _): return "missing field '\(k.stringValue)'"
        case DecodingError.typeMismatch(_, let c): return "wrong type at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.valueNotFound(_, let c): return "null at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted(let c): return c.debugDescription
        default: return "\(error)"
        }
    }

    static func string(_ frame: [UInt8]) -> String? {
        frame.count <= 64 ? String(validating: frame, as: UTF8.self) : nil
    }
}

