import DubfarmCore

/// A job's name and labels (`submit --name`, `--label k=v`): what people filter jobs by.
///
/// The rules are checked by the CLI before anything is uploaded and again by the coordinator,
/// which stores them; both use these functions.
package enum JobLabels {
    /// At most this many labels on one job.
    package static let maxCount = 32

    /// A label key: a lowercase letter or digit, then up to 62 of `a-z 0-9 . _ / -`
    /// (`lang`, `show`, `studio.example/season`).
    package static func isValidKey(_ k: String) -> Bool {
        guard let first = k.first, (1...63).contains(k.count), first.isASCII, first.isLowercase || first.isNumber else { return false }
        return k.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "._/-".contains($0)) }
    }

    /// A label value or a job name: 1…200 printable characters, no control characters and no
    /// comma (a selector lists several `k=v` separated by commas).
    package static func isValidValue(_ v: String) -> Bool {
        (1...200).contains(v.count) && !v.contains(",") && v.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7f }
    }

    /// Parses one `KEY=VALUE`.
    package static func parse(_ s: String) throws -> (key: String, value: String) {
        guard let eq = s.firstIndex(of: "=") else {
            throw DubfarmError(.badInput, "label '\(s.prefix(60))' is not KEY=VALUE (e.g. lang=es)")
        }
        let k = String(s[..<eq]), v = String(s[s.index(after: eq)...])
        guard isValidKey(k) else {
            throw DubfarmError(.badInput, "label key '\(k.prefix(60))': use 1…63 lowercase letters, digits and . _ / - (starting with a letter or digit)")
        }
        guard isValidValue(v) else {
            throw DubfarmError(.badInput, "label \(k): the value must be 1…200 printable characters without a comma")
        }
        return (k, v)
    }

    /// Parses `KEY=VALUE` items (each may itself list several, separated by commas) into one
    /// dictionary; a key given twice with different values is an error.
    package static func parse(_ items: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for item in items {
            for part in item.split(separator: ",", omittingEmptySubsequences: true) {
                let (k, v) = try parse(String(part))
                if let old = out[k], old != v { throw DubfarmError(.badInput, "label \(k) given twice (\(old) and \(v))") }
                out[k] = v
            }
        }
        try check(out)
        return out
    }

    /// Checks a whole label set (as the coordinator receives it).
    package static func check(_ labels: [String: String]) throws {
        guard labels.count <= maxCount else { throw DubfarmError(.badInput, "\(labels.count) labels; a job takes at most \(maxCount)") }
        for (k, v) in labels.sorted(by: { $0.key < $1.key }) {
            guard isValidKey(k) else {
                throw DubfarmError(.badInput, "label key '\(k.prefix(60))': use 1…63 lowercase letters, digits and . _ / - (starting with a letter or digit)")
            }
            guard isValidValue(v) else { throw DubfarmError(.badInput, "label \(k): the value must be 1…200 printable characters without a comma") }
        }
    }

    /// Checks a job name.
    package static func checkName(_ name: String) throws {
        guard isValidValue(name) else {
            throw DubfarmError(.badInput, "job name '\(name.prefix(60))': use 1…200 printable characters without a comma")
        }
    }

    /// Whether `labels` has every pair of `selector`.
    package static func matches(_ labels: [String: String], _ selector: [String: String]) -> Bool {
        selector.allSatisfy { labels[$0.key] == $0.value }
    }

    /// `k=v,k2=v2`, sorted by key: how labels are printed.
    package static func format(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}
