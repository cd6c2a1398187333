import Foundation

/// A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: it
/// rejects anything a Prometheus server would, and checks the rules scrapers rely on (TYPE
/// before samples, families not interleaved, no duplicate series, cumulative histogram buckets
/// ending in `+Inf` equal to `_count`).
package struct PrometheusText: Sendable {
    package struct Sample: Sendable, Hashable {
        package var name: String
        package var labels: [String: String]
        package var value: Double
    }

    package struct ParseError: Error, CustomStringConvertible {
        package let line: Int
        package let message: String
        package var description: String { "line \(line): \(message)" }
    }

    package private(set) var samples: [Sample] = []
    /// Family name → type (counter, gauge, histogram, summary, untyped).
    package private(set) var types: [String: String] = [:]
    package private(set) var help: [String: String] = [:]

    /// The value of the series `name{labels}` (labels must match exactly).
    package func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// All series of `name`.
    package func series(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    package init(_ text: String) throws {
        var seenFamilies: [String] = []   // in order of first sample
        var seriesKeys = Set<String>()
        var lineNo = 0
        func fail(_ m: String) -> ParseError { ParseError(line: lineNo, message: m) }
        guard text.isEmpty || text.hasSuffix("\n") else { throw ParseError(line: 0, message: "the exposition must end with a newline") }
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            lineNo += 1
            let line = String(raw)
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 3, parts[0] == "#", ["HELP", "TYPE"].contains(parts[1]) else { continue } // a plain comment
                let name = parts[2]
                guard Self.isMetricName(name) else { throw fail("bad metric name '\(name)' in \(parts[1])") }
                if parts[1] == "TYPE" {
                    guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                        throw fail("bad TYPE line '\(line)'")
                    }
                    guard types[name] == nil else { throw fail("second TYPE for \(name)") }
                    guard !seenFamilies.contains(name) else { throw fail("TYPE for \(name) after its samples") }
                    types[name] = parts[3]
                } else {
                    guard help[name] == nil else { throw fail("second HELP for \(name)") }
                    help[name] = parts.count == 4 ? parts[3] : ""
                }
                continue
            }
            let sample = try Self.parseSample(line, fail)
            let family = family(of: sample.name)
            if seenFamilies.last != family {
                guard !seenFamilies.contains(family) else { throw fail("samples of \(family) are not together") }
                seenFamilies.append(family)
            }
            let key = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
            guard seriesKeys.insert(key).inserted else { throw fail("duplicate series \(key)") }
            if types[family] == "counter", sample.value < 0 { throw fail("negative counter \(key)") }
            samples.append(sample)
        }
        try checkHistograms()
    }

    /// The family a sample belongs to (`x_bucket`, `x_sum`, `x_count` belong to histogram `x`).
    func family(of name: String) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" || types[base] == "summary" { return base }
        }
        return name
    }

    private func checkHistograms() throws {
        for (name, type) in types where type == "histogram" {
            // Group buckets by their labels other than `le`.
            var groups: [[String: String]: [(Double, Double)]] = [:]
            for s in series(name + "_bucket") {
                guard let le = s.labels["le"], let bound = le == "+Inf" ? Double.infinity : Double(le) else {
                    throw ParseError(line: 0, message: "\(name)_bucket without a valid le label")
                }
                var rest = s.labels
                rest["le"] = nil
                groups[rest, default: []].append((bound, s.value))
            }
            guard !groups.isEmpty else { throw ParseError(line: 0, message: "histogram \(name) has no buckets") }
            for (labels, buckets) in groups {
                let sorted = buckets.sorted { $0.0 < $1.0 }
                guard sorted.last?.0 == .infinity else { throw ParseError(line: 0, message: "histogram \(name) lacks the +Inf bucket") }
                for (a, b) in zip(sorted, sorted.dropFirst()) where b.1 < a.1 {
                    throw ParseError(line: 0, message: "histogram \(name) buckets are not cumulative")
                }
                guard let count = value(name + "_count", labels), value(name + "_sum", labels) != nil else {
                    throw ParseError(line: 0, message: "histogram \(name) lacks _count or _sum")
                }
                guard count == sorted.last!.1 else { throw ParseError(line: 0, message: "histogram \(name): +Inf bucket ≠ _count") }
            }
        }
    }

    static func isMetricName(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, f.isASCIILetter || f == "_" || f == ":" else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCIILetter || ("0"..."9").contains($0) || $0 == "_" || $0 == ":" }
    }

    static func isLabelName(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, f.isASCIILetter || f == "_" else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCIILetter || ("0"..."9").contains($0) || $0 == "_" }
    }

    static func parseSample(_ line: String, _ fail: (String) -> ParseError) throws -> Sample {
        let chars = Array(line.unicodeScalars)
        var i = 0
        var name = ""
        while i < chars.count, chars[i] != "{", chars[i] != " " { name.unicodeScalars.append(chars[i]); i += 1 }
        guard isMetricName(name) else { throw fail("bad metric name '\(name)'") }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while true {
                guard i < chars.count else { throw fail("unterminated label set") }
                if chars[i] == "}" { i += 1; break }
                var lname = ""
                while i < chars.count, chars[i] != "=" { lname.unicodeScalars.append(chars[i]); i += 1 }
                guard isLabelName(lname), i + 1 < chars.count, chars[i + 1] == "\"" else { throw fail("bad label '\(lname)'") }
                i += 2
                var v = ""
                while true {
                    guard i < chars.count else { throw fail("unterminated label value") }
                    let c = chars[i]
                    if c == "\"" { i += 1; break }
                    if c == "\\" {
                        guard i + 1 < chars.count else { throw fail("dangling escape") }
                        switch chars[i + 1] {
                        case "\\": v += "\\"
                        case "\"": v += "\""
                        case "n": v += "\n"
                        default: throw fail("bad escape \\\(chars[i + 1])")
                        }
                        i += 2
                        continue
                    }
                    v.unicodeScalars.append(c)
                    i += 1
                }
                guard labels[lname] == nil else { throw fail("label \(lname) twice") }
                labels[lname] = v
                guard i < chars.count else { throw fail("unterminated label set") }
                if chars[i] == "," { i += 1 } else if chars[i] != "}" { throw fail("expected , or } after a label") }
            }
        }
        guard i < chars.count, chars[i] == " " else { throw fail("expected a space before the value") }
        let rest = String(String.UnicodeScalarView(chars[(i + 1)...])).split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(rest.count) else { throw fail("expected a value and an optional timestamp") }
        let value: Double
        switch rest[0] {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let d = Double(rest[0]), !rest[0].hasPrefix("+"), rest[0].lowercased() != "inf", rest[0].lowercased() != "nan" else {
                throw fail("bad value '\(rest[0])'")
            }
            value = d
        }
        if rest.count == 2, Int64(rest[1]) == nil { throw fail("bad timestamp '\(rest[1])'") }
        return Sample(name: name, labels: labels, value: value)
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
}
