import DubfarmCore
import FarmProtocol
import Foundation
import SwiftCSV
import Yams

/// A batch of jobs in one file (`submit --manifest jobs.csv`), checked whole before anything is
/// uploaded: every problem of every row is reported at once, and a manifest with any problem
/// submits nothing.
///
/// Each job has the keys `video` and `audio` (required) and `face`, `priority`, `out`, `labels`,
/// `name`, `lang`, `stage`, `model`. Paths are relative to the manifest's directory (`~` is
/// expanded), `out` may use the ``OutputPattern`` placeholders (`{index}` is the job's position),
/// and a job without `lang` gets the one its dub track's file name carries.
///
/// - CSV: a header row naming the columns (any case, any order), then one row per job; `labels`
///   is `k=v;k2=v2`. Problems are reported as "row N", N being the line the row starts on (the
///   header is line 1); blank lines are skipped.
/// - YAML: a list of mappings, or a mapping whose `jobs` key holds that list; `labels` is a
///   mapping (or the `k=v;…` string). Problems are reported as "job N", N being the position in
///   the list (from 1).
package enum SubmissionManifest {
    /// The manifest's syntax, told by its file extension.
    package enum Format: Sendable, Hashable {
        case csv, yaml

        /// `.csv`, or `.yaml`/`.yml` (any case); `nil` for anything else.
        package init?(path: String) {
            switch ClientPath.fileExtension(path) {
            case "csv": self = .csv
            case "yaml", "yml": self = .yaml
            default: return nil
            }
        }
    }

    /// What a path names, as far as submitting it is concerned.
    package enum FileKind: Sendable, Hashable {
        case missing, directory, unreadable, file

        /// What `path` names on this machine's file system.
        package static func of(_ path: String) -> FileKind {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .missing }
            if isDirectory.boolValue { return .directory }
            return FileManager.default.isReadableFile(atPath: path) ? .file : .unreadable
        }
    }

    /// The keys (CSV columns, YAML keys) a job may have.
    package static let keys = ["video", "audio", "face", "priority", "out", "labels", "name", "lang", "stage", "model"]

    /// At most this many problems are listed in the error; the rest are counted.
    static let maxListedProblems = 50

    /// Reads and checks the manifest at `path` (its format told by its extension).
    package static func load(path: String) throws -> [PlannedSubmission] {
        guard let format = Format(path: path) else {
            throw DubfarmError(.badInput, "\(path): a manifest is a .csv, .yaml or .yml file")
        }
        switch FileKind.of(path) {
        case .missing: throw DubfarmError(.badInput, "\(path): no such manifest file")
        case .directory: throw DubfarmError(.badInput, "\(path): is a directory, not a manifest file")
        case .unreadable: throw DubfarmError(.localFile, "\(path): the manifest is not readable")
        case .file: break
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DubfarmError(.localFile, "\(path): cannot read the manifest: \(error.localizedDescription)")
        }
        return try parse(text: text, format: format, baseDirectory: ClientPath.directory(of: path), name: fileName(path),
                         fileKind: FileKind.of)
    }

    /// Parses and checks a manifest's text.
    ///
    /// - Parameters:
    ///   - baseDirectory: what relative paths are relative to (the manifest's directory).
    ///   - name: how messages name the manifest (its file name).
    ///   - fileKind: what a resolved path names (``FileKind/of(_:)`` outside tests).
    /// - Returns: every job, in the file's order.
    /// - Throws: one `DubfarmError(.badInput)` listing every problem ("jobs.csv: 2 problems,
    ///   nothing was submitted:" then a line per problem), or saying the manifest holds no jobs.
    package static func parse(text: String, format: Format, baseDirectory: String, name: String = "manifest",
                              fileKind: (String) -> FileKind) throws -> [PlannedSubmission] {
        let rows = switch format {
        case .csv: try csvRows(text, name: name)
        case .yaml: try yamlRows(text, name: name)
        }
        var problems = rows.problems
        var planned: [PlannedSubmission] = []
        var outputs: [String: String] = [:]
        for (position, row) in rows.rows.enumerated() {
            let (job, rowProblems) = plan(row, index: position + 1, baseDirectory: baseDirectory,
                                          missingColumns: rows.missingColumns, fileKind: fileKind)
            problems += (row.problems + rowProblems).map { "\(row.label): \($0)" }
            guard let job else { continue }
            if let out = job.out {
                if let other = outputs[out] {
                    problems.append("\(row.label): out \(out) is also \(other)'s output")
                } else {
                    outputs[out] = row.label
                }
            }
            planned.append(job)
        }
        if !problems.isEmpty {
            var lines = problems.prefix(maxListedProblems).map { "  \($0)" }
            if problems.count > maxListedProblems { lines.append("  … and \(problems.count - maxListedProblems) more") }
            throw DubfarmError(.badInput, "\(name): \(problems.count) \(problems.count == 1 ? "problem" : "problems"), nothing was submitted:\n"
                               + lines.joined(separator: "\n"))
        }
        guard !planned.isEmpty else { throw DubfarmError(.badInput, "\(name): no jobs in it") }
        return planned
    }

    // MARK: Rows

    /// A value of one key of one job, before it is checked.
    enum Cell {
        case text(String)
        /// YAML `labels` as a mapping (or list) of `k=v`.
        case labels([String])
        /// A value of the wrong shape, already reported.
        case invalid
    }

    /// One job as written: its label in messages ("row 3", "job 3"), its number, its cells, and
    /// the problems of its shape (unknown keys, extra cells).
    struct Row {
        var label: String
        var number: Int
        var cells: [String: Cell] = [:]
        var problems: [String] = []

        func isInvalid(_ key: String) -> Bool {
            if case .invalid? = cells[key] { return true }
            return false
        }
    }

    /// The rows of a manifest, the problems of its header, and the required columns it lacks
    /// (reported once, not on every row).
    struct Rows {
        var rows: [Row] = []
        var problems: [String] = []
        var missingColumns: Set<String> = []
    }

    static var keyList: String { keys.joined(separator: ", ") }

    /// The data rows of a CSV manifest, numbered by the line each starts on.
    static func csvRows(_ text: String, name: String) throws -> Rows {
        // Leading blank lines would be read as the header; skip them, counting the lines.
        var body = Substring(text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text)
        var line = 1
        while let end = body.firstIndex(where: \.isNewline), body[..<end].allSatisfy(\.isWhitespace) {
            body = body[body.index(after: end)...]
            line += 1
        }
        let csv: EnumeratedCSV
        do { csv = try EnumeratedCSV(string: String(body), delimiter: .comma, loadColumns: false) } catch {
            let reason = switch error as? CSVParseError {
            case .generic(let m), .quotation(let m): m
            case nil: "\(error)"
            }
            throw DubfarmError(.badInput, "\(name) is not valid CSV: \(reason)")
        }
        let header = csv.header.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard header.contains(where: { !$0.isEmpty }) else {
            throw DubfarmError(.badInput, "\(name): the first line must name the columns (\(keyList))")
        }
        var out = Rows()
        var columns: [Int: String] = [:]
        for (i, h) in header.enumerated() {
            if !keys.contains(h) {
                out.problems.append(h.isEmpty ? "header: column \(i + 1) has no name; columns are \(keyList)"
                                              : "header: unknown column '\(h.prefix(40))'; columns are \(keyList)")
            } else if columns.values.contains(h) {
                out.problems.append("header: column \(h) given twice")
            } else {
                columns[i] = h
            }
        }
        for required in ["video", "audio"] where !header.contains(required) {
            out.problems.append("header: no \(required) column (video and audio are required)")
            out.missingColumns.insert(required)
        }
        line += 1 + newlines(in: csv.header)
        for fields in csv.rows {
            defer { line += 1 + newlines(in: fields) }
            let trimmed = fields.map { $0.trimmingCharacters(in: .whitespaces) }
            guard trimmed.contains(where: { !$0.isEmpty }) else { continue }
            var row = Row(label: "row \(line)", number: line)
            for (i, value) in trimmed.enumerated() {
                if let key = columns[i] {
                    if !value.isEmpty { row.cells[key] = .text(value) }
                } else if i >= header.count && !value.isEmpty {
                    row.problems.append("\(trimmed.count) cells but the header names \(header.count) columns")
                    break
                }
            }
            out.rows.append(row)
        }
        return out
    }

    static func newlines(in fields: [String]) -> Int {
        fields.reduce(0) { $0 + $1.filter(\.isNewline).count }
    }

    /// The jobs of a YAML manifest, numbered by position.
    static func yamlRows(_ text: String, name: String) throws -> Rows {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw DubfarmError(.badInput, "\(name) is not valid YAML: \(error)")
        }
        let shapeMessage = "\(name): list the jobs at the top level or under jobs:, each a mapping of \(keyList)"
        var items: [Node] = []
        switch root {
        case nil: break
        case .sequence(let s)?: items = Array(s)
        case .mapping(let m)?:
            for (k, v) in m {
                guard k.scalar?.string == "jobs" else {
                    throw DubfarmError(.badInput, "\(name): unknown top-level key '\((k.scalar?.string ?? "?").prefix(40))'; \(shapeMessage.dropFirst(name.count + 2))")
                }
                switch v {
                case .sequence(let s): items = Array(s)
                case .scalar where v.null != nil: break
                default: throw DubfarmError(.badInput, "\(name): jobs: must be a list of jobs, each a mapping of \(keyList)")
                }
            }
        default: throw DubfarmError(.badInput, shapeMessage)
        }
        var out = Rows()
        for (i, item) in items.enumerated() {
            let label = "job \(i + 1)"
            guard case .mapping(let m) = item else {
                out.rows.append(Row(label: label, number: i + 1, cells: ["video": .invalid, "audio": .invalid],
                                    problems: ["not a mapping of \(keyList)"]))
                continue
            }
            var row = Row(label: label, number: i + 1)
            for (k, v) in m {
                guard let key = k.scalar?.string.lowercased(), keys.contains(key) else {
                    row.problems.append("unknown key '\((k.scalar?.string ?? "?").prefix(40))'; keys are \(keyList)")
                    continue
                }
                if v.null != nil { continue }
                switch v {
                case .scalar(let s):
                    row.cells[key] = .text(s.string.trimmingCharacters(in: .whitespaces))
                case .mapping(let labels) where key == "labels":
                    var items: [String] = []
                    for (lk, lv) in labels {
                        guard let lk = lk.scalar?.string, let lv = lv.scalar?.string, !lk.contains("=") else {
                            row.problems.append("labels: each label is key: value, both single values (a key without =)")
                            continue
                        }
                        items.append("\(lk)=\(lv)")
                    }
                    row.cells[key] = .labels(items)
                case .sequence(let list) where key == "labels":
                    let items = list.compactMap { $0.scalar?.string }
                    if items.count != list.count { row.problems.append("labels: list each label as k=v") }
                    row.cells[key] = .labels(items)
                default:
                    row.problems.append("\(key) must be a single value")
                    row.cells[key] = .invalid
                }
            }
            out.rows.append(row)
        }
        return out
    }

    // MARK: One job

    /// Checks one row and plans its job; `nil` when a problem prevents it.
    static func plan(_ row: Row, index: Int, baseDirectory: String, missingColumns: Set<String>,
                     fileKind: (String) -> FileKind) -> (PlannedSubmission?, [String]) {
        var problems: [String] = []
        func text(_ key: String) -> String? {
            guard case .text(let t)? = row.cells[key], !t.isEmpty else { return nil }
            return t
        }
        func file(_ key: String, required: Bool) -> String? {
            guard let given = text(key) else {
                if required, !missingColumns.contains(key), !row.isInvalid(key) { problems.append("no \(key) given") }
                return nil
            }
            let path = ClientPath.resolve(given, against: baseDirectory)
            switch fileKind(path) {
            case .file: return path
            case .missing: problems.append("\(key) \(given): no such file")
            case .directory: problems.append("\(key) \(given): is a directory, not a file")
            case .unreadable: problems.append("\(key) \(given): not readable")
            }
            return nil
        }
        let video = file("video", required: true)
        let audio = file("audio", required: true)
        let face = file("face", required: false)

        var priority: Int?
        if let p = text("priority") {
            priority = Int(p)
            if priority == nil { problems.append("priority '\(p.prefix(40))' is not a whole number") }
        }
        var labels: [String: String] = [:]
        do {
            switch row.cells["labels"] {
            case .text(let t)?: labels = try JobLabels.parse(t.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) })
            case .labels(let items)?: labels = try JobLabels.parse(items)
            case .invalid?, nil: break
            }
        } catch {
            problems.append("labels: \(message(error))")
        }
        let name = text("name")
        if let name {
            do { try JobLabels.checkName(name) } catch { problems.append(message(error)) }
        }
        var lang: String?
        if let given = text("lang") {
            lang = DubLanguage.normalise(given)
            if lang == nil { problems.append("lang \(DubLanguage.invalidTagMessage(given))") }
        } else if let a = text("audio") {
            lang = DubLanguage.guess(fileName: fileName(a))
        }
        var out: String?
        if let given = text("out") {
            do {
                let pattern = try OutputPattern(given)
                if pattern.placeholders.contains(.lang), lang == nil, let a = text("audio"), text("lang") == nil {
                    problems.append("out uses {lang} but " + OutputPattern.unknownLanguageMessage(audio: a)
                        .replacingOccurrences(of: "name it with --lang", with: "give it in a lang column"))
                } else if pattern.placeholders.contains(.name), name == nil {
                    problems.append("out uses {name} but the job has no name")
                } else if let v = text("video"), let a = text("audio"), lang != nil || text("lang") == nil {
                    let expanded = try pattern.expand(video: v, audio: a, lang: lang, name: name, index: index)
                    out = ClientPath.resolve(expanded, against: baseDirectory)
                }
            } catch {
                problems.append("out: \(message(error))")
            }
        }
        guard problems.isEmpty, let video, let audio else { return (nil, problems) }
        // The job is found by its language as the command line's jobs are (`--label lang=es`).
        if let lang, labels["lang"] == nil { labels["lang"] = lang }
        return (PlannedSubmission(video: video, audio: audio, face: face, lang: lang, name: name, labels: labels, priority: priority,
                                  out: out, stage: text("stage"), model: text("model"), row: row.number), [])
    }

    static func message(_ error: any Error) -> String {
        (error as? DubfarmError)?.message ?? "\(error)"
    }
}

extension ClientPath {
    /// The file name's extension, lowercased (`""` when it has none).
    static func fileExtension(_ path: String) -> String {
        let name = fileName(path)
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "" }
        return name[name.index(after: dot)...].lowercased()
    }
}
