import DubfarmCore
import Foundation

/// The result of one statement, copied out of libpq: column names and text-format values.
package struct PostgresRows: Sendable, RandomAccessCollection {
    final class Storage: Sendable {
        let columns: [String]
        let index: [String: Int]
        /// Row-major: `values[row * columns.count + column]`.
        let values: [String?]
        init(columns: [String], values: [String?]) {
            self.columns = columns
            var idx: [String: Int] = [:]
            for (i, c) in columns.enumerated() where idx[c] == nil { idx[c] = i }
            self.index = idx
            self.values = values
        }
    }

    let storage: Storage
    /// Rows in the result.
    package let count: Int
    /// Rows the statement inserted, updated or deleted (`PQcmdTuples`), or the rows returned.
    package let affectedRows: Int
    /// The command tag, e.g. `UPDATE 3`.
    package let commandTag: String

    init(columns: [String], values: [String?], rowCount: Int, affectedRows: Int, commandTag: String) {
        self.storage = Storage(columns: columns, values: values)
        self.count = rowCount
        self.affectedRows = affectedRows
        self.commandTag = commandTag
    }

    /// Column names, in order.
    package var columns: [String] { storage.columns }
    package var startIndex: Int { 0 }
    package var endIndex: Int { count }
    package subscript(position: Int) -> PostgresRow { PostgresRow(storage: storage, row: position) }
}

/// One row of a ``PostgresRows``.
package struct PostgresRow: Sendable {
    let storage: PostgresRows.Storage
    let row: Int

    /// The cell in column `name`. A missing column yields a cell whose decoding throws, naming it.
    package subscript(name: String) -> PostgresCell {
        guard let i = storage.index[name] else { return PostgresCell(column: name, text: nil, missing: true) }
        return PostgresCell(column: name, text: storage.values[row * storage.columns.count + i], missing: false)
    }

    /// The cell in column number `index` (0-based).
    package subscript(index: Int) -> PostgresCell {
        guard index >= 0 && index < storage.columns.count else {
            return PostgresCell(column: "#\(index)", text: nil, missing: true)
        }
        return PostgresCell(column: storage.columns[index], text: storage.values[row * storage.columns.count + index],
                            missing: false)
    }
}

/// One value of a row in text format, with typed accessors.
///
/// ```swift
/// let id = try row["id"].decode(Int64.self)
/// let face = try row["face_name"].decode(String?.self)
/// ```
package struct PostgresCell: Sendable {
    /// The column's name.
    package let column: String
    /// The value's text form, `nil` for SQL `NULL`.
    package let text: String?
    let missing: Bool

    /// Whether the result has this column at all.
    package var exists: Bool { !missing }

    /// Whether the value is SQL `NULL`.
    package var isNull: Bool { text == nil }

    /// Decodes a non-`NULL` value; throws when it is `NULL`, missing or malformed.
    package func decode<T: PostgresDecodable>(_ type: T.Type = T.self) throws -> T {
        guard !missing else { throw DubfarmError(.internalError, "result has no column \(column)") }
        guard let text else {
            throw DubfarmError(.database, "column \(column) is NULL where a \(T.self) was expected")
        }
        guard let v = T(postgresText: text) else {
            throw DubfarmError(.database, "column \(column) holds \"\(text.prefix(64))\", which is not a valid \(T.self)")
        }
        return v
    }

    /// Decodes a value that may be `NULL`.
    package func decode<T: PostgresDecodable>(_ type: T?.Type) throws -> T? {
        guard !missing else { throw DubfarmError(.internalError, "result has no column \(column)") }
        guard text != nil else { return nil }
        return try decode(T.self)
    }

    /// The text, or `nil` for `NULL`.
    package var string: String? { text }
}

/// A Swift type that can be read from PostgreSQL's text format.
package protocol PostgresDecodable: Sendable {
    init?(postgresText: String)
}

extension String: PostgresDecodable {
    package init?(postgresText: String) { self = postgresText }
}
extension Int: PostgresDecodable {
    package init?(postgresText: String) { self.init(postgresText) }
}
extension Int64: PostgresDecodable {
    package init?(postgresText: String) { self.init(postgresText) }
}
extension Int32: PostgresDecodable {
    package init?(postgresText: String) { self.init(postgresText) }
}
extension Double: PostgresDecodable {
    package init?(postgresText: String) {
        switch postgresText {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default: self.init(postgresText)
        }
    }
}
extension Bool: PostgresDecodable {
    package init?(postgresText: String) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}
extension Date: PostgresDecodable {
    package init?(postgresText: String) {
        guard let d = PostgresDate.parse(postgresText) else { return nil }
        self = d
    }
}
extension Array: PostgresDecodable where Element == UInt8 {
    /// Decodes `bytea` in hex format (`\x0a1b…`).
    package init?(postgresText: String) {
        let b = Array(postgresText.utf8)
        guard b.count >= 2, b[0] == 92, b[1] == 120, b.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity((b.count - 2) / 2)
        var i = 2
        while i < b.count {
            guard let h = nibble(b[i]), let l = nibble(b[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        self = out
    }
}
