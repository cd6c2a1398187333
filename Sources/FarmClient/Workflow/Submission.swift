import DubfarmCore
import FarmProtocol
import Foundation

/// One job to submit, as planned from the command line or a manifest, before any upload.
///
/// Planning is pure: it checks what can be checked without the coordinator (names, labels,
/// languages, output names) so that a batch either goes in whole or not at all.
package struct PlannedSubmission: Hashable, Sendable {
    /// The video to dub: a file path (a manifest's relative paths already resolved against the
    /// manifest's directory).
    package var video: String
    /// The dub track: a file path, resolved like ``video``.
    package var audio: String
    /// A picture of the face to swap in, resolved like ``video``.
    package var face: String?
    /// The dub track's language tag (`es`, `pt-BR`): as given, or guessed from the track's file
    /// name (``DubLanguage/guess(fileName:)``); `nil` when neither tells.
    package var lang: String?
    /// The job's name (``JobLabels/checkName(_:)`` holds for it).
    package var name: String?
    /// The job's labels (``JobLabels/check(_:)`` holds for them).
    package var labels: [String: String]
    /// Higher runs first; `nil`: the command line's default.
    package var priority: Int?
    /// Where to download the result: a path with the ``OutputPattern`` placeholders expanded.
    package var out: String?
    /// The processing stage; `nil`: the coordinator's default.
    package var stage: String?
    /// The model the job requires (`NAME` or `NAME@VERSION`).
    package var model: String?
    /// Where the job came from in a manifest: in a CSV file the line its row starts on (the
    /// header is line 1), in a YAML file its 1-based position in the job list; `nil` from the
    /// command line.
    package var row: Int?

    /// A planned job; everything but the two files is optional.
    package init(video: String, audio: String, face: String? = nil, lang: String? = nil, name: String? = nil,
                 labels: [String: String] = [:], priority: Int? = nil, out: String? = nil, stage: String? = nil,
                 model: String? = nil, row: Int? = nil) {
        self.video = video
        self.audio = audio
        self.face = face
        self.lang = lang
        self.name = name
        self.labels = labels
        self.priority = priority
        self.out = out
        self.stage = stage
        self.model = model
        self.row = row
    }
}

// MARK: - Languages

/// Language tags of dub tracks: `es`, `de`, `pt-BR`, `es-419`.
package enum DubLanguage {
    /// Every ISO 639-1 two-letter language code (184, `bh` included).
    package static let iso639_1: Set<String> = [
        "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az",
        "ba", "be", "bg", "bh", "bi", "bm", "bn", "bo", "br", "bs",
        "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy",
        "da", "de", "dv", "dz",
        "ee", "el", "en", "eo", "es", "et", "eu",
        "fa", "ff", "fi", "fj", "fo", "fr", "fy",
        "ga", "gd", "gl", "gn", "gu", "gv",
        "ha", "he", "hi", "ho", "hr", "ht", "hu", "hy", "hz",
        "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu",
        "ja", "jv",
        "ka", "kg", "ki", "kj", "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky",
        "la", "lb", "lg", "li", "ln", "lo", "lt", "lu", "lv",
        "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my",
        "na", "nb", "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv", "ny",
        "oc", "oj", "om", "or", "os",
        "pa", "pi", "pl", "ps", "pt",
        "qu",
        "rm", "rn", "ro", "ru", "rw",
        "sa", "sc", "sd", "se", "sg", "si", "sk", "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su", "sv", "sw",
        "ta", "te", "tg", "th", "ti", "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty",
        "ug", "uk", "ur", "uz",
        "ve", "vi", "vo",
        "wa", "wo",
        "xh",
        "yi", "yo",
        "za", "zh", "zu",
    ]

    /// The language tag a dub track's file name carries, or `nil`.
    ///
    /// The stem (the name without its extension) is split on `.`, `_`, `-` and spaces; its
    /// last token, if an ISO 639-1 code (any case), is the language; or its last two, a code and
    /// a region: two uppercase letters or three digits (`pt-BR`, `es_419`), or two lowercase
    /// letters joined by `-` (`pt-br`). Only the end of the name counts, so an ordinary word
    /// earlier in it (`my_video.wav`: "my") is not taken for a language. `talk.es.wav` → `es`,
    /// `dub-de.wav` → `de`, `episode1_pt-BR.m4a` → `pt-BR`, `show_es_419.wav` → `es-419`,
    /// `dub.wav` → `nil`.
    package static func guess(fileName name: String) -> String? {
        let tokens = tokenise(ClientPath.stem(name))
        guard let last = tokens.last else { return nil }
        if tokens.count > 1, let lang = language(tokens[tokens.count - 2].text),
           let region = region(last.text, joinedByHyphen: last.separator == "-") {
            return "\(lang)-\(region)"
        }
        return language(last.text)
    }

    /// The canonical form of a `--lang` value, or `nil` when it is not a language tag: a
    /// language of 2 or 3 letters (two-letter ones must be ISO 639-1 codes), optionally `-` or
    /// `_` and a region of 2 letters or 3 digits; any case in, lowercase language and uppercase
    /// region out (`PT_br` → `pt-BR`).
    package static func normalise(_ tag: String) -> String? {
        let parts = tag.trimmingCharacters(in: .whitespaces)
            .split(omittingEmptySubsequences: false, whereSeparator: { $0 == "-" || $0 == "_" })
        guard (1...2).contains(parts.count) else { return nil }
        let lang = parts[0].lowercased()
        guard (2...3).contains(lang.count), lang.allSatisfy({ $0.isASCII && $0.isLetter }) else { return nil }
        if lang.count == 2 && !iso639_1.contains(lang) { return nil }
        guard parts.count == 2 else { return lang }
        let r = parts[1]
        if r.count == 2, r.allSatisfy({ $0.isASCII && $0.isLetter }) { return "\(lang)-\(r.uppercased())" }
        if r.count == 3, r.allSatisfy({ $0.isASCII && $0.isNumber }) { return "\(lang)-\(r)" }
        return nil
    }

    /// Whether `tag` is a usable `--lang` value (see ``normalise(_:)``; any case).
    package static func isValidTag(_ tag: String) -> Bool {
        normalise(tag) != nil
    }

    /// The message for a `--lang` value (or manifest `lang` cell) that is not a language tag.
    static func invalidTagMessage(_ tag: String) -> String {
        "'\(tag.prefix(40))' is not a language code; use an ISO 639-1 code with an optional region, like es, pt-BR or es-419"
    }

    static func tokenise(_ stem: String) -> [(text: Substring, separator: Character?)] {
        var tokens: [(text: Substring, separator: Character?)] = []
        var start = stem.startIndex
        var separator: Character?
        for i in stem.indices where ".-_ ".contains(stem[i]) {
            if start < i { tokens.append((stem[start..<i], separator)) }
            separator = stem[i]
            start = stem.index(after: i)
        }
        if start < stem.endIndex { tokens.append((stem[start...], separator)) }
        return tokens
    }

    static func language(_ token: Substring) -> String? {
        guard token.count == 2, token.allSatisfy({ $0.isASCII && $0.isLetter }) else { return nil }
        let l = token.lowercased()
        return iso639_1.contains(l) ? l : nil
    }

    static func region(_ token: Substring, joinedByHyphen: Bool) -> String? {
        if token.count == 3, token.allSatisfy({ $0.isASCII && $0.isNumber }) { return String(token) }
        guard token.count == 2, token.allSatisfy({ $0.isASCII && $0.isLetter }) else { return nil }
        if token.allSatisfy(\.isUppercase) || (joinedByHyphen && token.allSatisfy(\.isLowercase)) { return token.uppercased() }
        return nil
    }
}

// MARK: - Output names

/// An output path with placeholders, one per job (`out/{stem}.{lang}.mp4`).
///
/// Placeholders: `{stem}` and `{video}` the video's file name without its extension, `{audio}`
/// the dub track's, `{lang}` its language, `{name}` the job's name, `{index}` the job's 1-based
/// position, `{job}` its id (known only once submitted: for `wait --out` and `fetch --out`);
/// `{{` and `}}` are literal braces. Substituted values never add a directory: a `/` in
/// one becomes `_`.
package struct OutputPattern: Hashable, Sendable {
    /// A value substituted per job.
    package enum Placeholder: String, CaseIterable, Hashable, Sendable {
        case stem, video, audio, lang, name, index, job
    }

    enum Part: Hashable, Sendable {
        case text(String)
        case placeholder(Placeholder)
    }

    /// The pattern as given.
    package let pattern: String
    let parts: [Part]

    /// Parses `pattern`; an unknown placeholder or a lone brace is an error naming it.
    package init(_ pattern: String) throws {
        self.pattern = pattern
        guard !pattern.isEmpty else { throw DubfarmError(.badInput, "the output path is empty") }
        var parts: [Part] = []
        var text = ""
        var i = pattern.startIndex
        func next(_ j: String.Index) -> Character? {
            let k = pattern.index(after: j)
            return k < pattern.endIndex ? pattern[k] : nil
        }
        while i < pattern.endIndex {
            let c = pattern[i]
            if c == "{" && next(i) == "{" || c == "}" && next(i) == "}" {
                text.append(c)
                i = pattern.index(i, offsetBy: 2)
            } else if c == "}" {
                throw DubfarmError(.badInput, "output path '\(pattern)': a lone }; write }} for a literal brace")
            } else if c == "{" {
                guard let close = pattern[i...].firstIndex(of: "}") else {
                    throw DubfarmError(.badInput, "output path '\(pattern)': a { without its }; write {{ for a literal brace")
                }
                let word = String(pattern[pattern.index(after: i)..<close])
                guard let p = Placeholder(rawValue: word) else {
                    throw DubfarmError(.badInput, "output path '\(pattern)': unknown placeholder {\(word.prefix(40))}; known: \(Self.known) ({{ and }} for literal braces)")
                }
                if !text.isEmpty { parts.append(.text(text)) }
                text = ""
                parts.append(.placeholder(p))
                i = pattern.index(after: close)
            } else {
                text.append(c)
                i = pattern.index(after: i)
            }
        }
        if !text.isEmpty { parts.append(.text(text)) }
        self.parts = parts
    }

    /// `{stem}, {video}, …`: the placeholders, as error messages list them.
    package static var known: String {
        Placeholder.allCases.map { "{\($0.rawValue)}" }.joined(separator: ", ")
    }

    /// Whether the pattern has no placeholders (it names one file for every job).
    package var isConstant: Bool { placeholders.isEmpty }

    /// The placeholders the pattern uses.
    package var placeholders: Set<Placeholder> {
        Set(parts.compactMap { part -> Placeholder? in
            guard case .placeholder(let p) = part else { return nil }
            return p
        })
    }

    /// The output path for one job: `video` and `audio` are its files (only their stems are used),
    /// `index` its 1-based position, `job` its id once submitted. Throws when the pattern needs a
    /// language, name or id the job lacks.
    package func expand(video: String, audio: String, lang: String?, name: String?, index: Int, job: Int64? = nil) throws -> String {
        var out = ""
        for part in parts {
            switch part {
            case .text(let t): out += t
            case .placeholder(let p):
                let value: String
                switch p {
                case .stem, .video: value = ClientPath.stem(video)
                case .audio: value = ClientPath.stem(audio)
                case .index: value = String(index)
                case .job:
                    guard let job else {
                        throw DubfarmError(.badInput, "the output path '\(pattern)' uses {job}, the job's id, which is known only once it is submitted; use it with wait --out or fetch --out")
                    }
                    value = String(job)
                case .lang:
                    guard let lang else { throw DubfarmError(.badInput, Self.unknownLanguageMessage(audio: audio)) }
                    value = lang
                case .name:
                    guard let name else {
                        throw DubfarmError(.badInput, "the output path '\(pattern)' uses {name} but the job has no name; give it one with --name")
                    }
                    value = name
                }
                out += Self.pathSafe(value)
            }
        }
        return out
    }

    /// "cannot tell the language of dub.wav; …": `{lang}` is used but the track's is unknown.
    static func unknownLanguageMessage(audio: String) -> String {
        let file = fileName(audio)
        let stem = ClientPath.stem(file)
        let example = stem == file ? "\(stem).es" : "\(stem).es\(file.dropFirst(stem.count))"
        return "cannot tell the language of \(file); name it with --lang or put it in the file name (\(example))"
    }

    /// `value` as one path component: `/` becomes `_`, and `.` or `..` become underscores.
    static func pathSafe(_ value: String) -> String {
        let v = value.replacingOccurrences(of: "/", with: "_")
        return v == "." || v == ".." ? String(repeating: "_", count: v.count) : v
    }
}

// MARK: - Several dub tracks for one video

/// One job per dub track of a video (`submit talk.mp4 --audio es.wav --audio de.wav`).
package enum TrackExpansion {
    /// The file extensions taken as dub tracks (lowercase).
    package static let audioExtensions: Set<String> = ["wav", "mp3", "m4a", "aac", "flac", "ogg", "opus"]

    /// The audio files among a directory's entry names (`--audio DIR/`): by extension, any case;
    /// hidden files skipped; sorted.
    package static func audioFiles(inDirectoryListing names: [String]) -> [String] {
        names.filter { name in
            guard !name.hasPrefix("."), let dot = name.lastIndex(of: ".") else { return false }
            return audioExtensions.contains(name[name.index(after: dot)...].lowercased())
        }.sorted()
    }

    /// One submission per track in `audio`, in that order, sharing `video` and the options.
    ///
    /// - `langs`: empty (each track's language is guessed from its file name), or one per track,
    ///   in the same order; each is normalised (``DubLanguage/normalise(_:)``).
    /// - Each job whose language is known gets the label `lang` (unless `labels` has one). With
    ///   several tracks, `name` becomes `NAME (es)` (or the track's stem), and `out` must have
    ///   placeholders; `{name}` expands to `name` as given.
    /// - Errors: no track, a track given twice, a `--lang` count that does not match, a bad
    ///   language, a bad pattern, a pattern that needs an unknown language, two tracks with the
    ///   same output path.
    package static func expand(video: String, audio: [String], langs: [String], face: String?, out: String?, name: String?,
                               labels: [String: String], priority: Int?, stage: String?, model: String?) throws -> [PlannedSubmission] {
        guard !audio.isEmpty else { throw DubfarmError(.badInput, "no dub track: give one with --audio") }
        var seen: [String: String] = [:]
        for a in audio {
            if let first = seen[ClientPath.clean(a)] {
                throw DubfarmError(.badInput, first == a ? "--audio \(a) given twice" : "--audio \(first) and \(a) are the same track")
            }
            seen[ClientPath.clean(a)] = a
        }
        guard langs.isEmpty || langs.count == audio.count else {
            throw DubfarmError(.badInput, "--lang given \(langs.count) \(langs.count == 1 ? "time" : "times") for \(audio.count) tracks; give it once per --audio, in the same order, or leave it out to read each language from its file name (dub.es.wav)")
        }
        let given = try langs.map { l in
            guard let n = DubLanguage.normalise(l) else { throw DubfarmError(.badInput, "--lang \(DubLanguage.invalidTagMessage(l))") }
            return n
        }
        let pattern = try out.map { try OutputPattern($0) }
        let several = audio.count > 1
        if several, let pattern, pattern.isConstant {
            throw DubfarmError(.badInput, "--out names one file for \(audio.count) tracks; put {lang} or {audio} in it, e.g. --out 'out/{stem}.{lang}.mp4'")
        }
        if let name { try JobLabels.checkName(name) }
        var outputs: [String: String] = [:]
        var planned: [PlannedSubmission] = []
        for (i, a) in audio.enumerated() {
            let lang = given.isEmpty ? DubLanguage.guess(fileName: fileName(a)) : given[i]
            var jobLabels = labels
            if let lang, jobLabels["lang"] == nil {
                jobLabels["lang"] = lang
                try JobLabels.check(jobLabels)
            }
            let jobName = name.map { several ? "\($0) (\(lang ?? ClientPath.stem(a)))" : $0 }
            if let jobName { try JobLabels.checkName(jobName) }
            let path = try pattern?.expand(video: video, audio: a, lang: lang, name: name, index: i + 1)
            if let path {
                if let other = outputs[ClientPath.clean(path)] {
                    throw DubfarmError(.badInput, "--out '\(pattern!.pattern)' gives \(path) for both \(other) and \(a); put {lang} or {audio} in it to tell them apart")
                }
                outputs[ClientPath.clean(path)] = a
            }
            planned.append(PlannedSubmission(video: video, audio: a, face: face, lang: lang, name: jobName, labels: jobLabels,
                                             priority: priority, out: path, stage: stage, model: model))
        }
        return planned
    }
}

// MARK: - Paths

/// Path arithmetic on strings, without the file system or the working directory.
enum ClientPath {
    /// The file name without its extension (`talk.es.wav` → `talk.es`; `.hidden` stays).
    static func stem(_ path: String) -> String {
        let name = fileName(path)
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return name }
        return String(name[..<dot])
    }

    /// The directory part of `path` (`.` when it has none).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// `~` and `~/…` expanded with `home` (the environment's `HOME` when `nil`); other paths as given.
    static func expandingTilde(_ path: String, home: String? = nil) -> String {
        guard path == "~" || path.hasPrefix("~/"),
              let home = home ?? ProcessInfo.processInfo.environment["HOME"], !home.isEmpty else { return path }
        return home + path.dropFirst()
    }

    /// `path` with `~` expanded, relative to `base` unless absolute; cleaned (``clean(_:)``).
    static func resolve(_ path: String, against base: String, home: String? = nil) -> String {
        let p = expandingTilde(path, home: home)
        return clean(p.hasPrefix("/") || base.isEmpty ? p : base + "/" + p)
    }

    /// `path` without empty and `.` components (`./a//b/` → `a/b`); `..` is kept (it may cross a
    /// symbolic link).
    static func clean(_ path: String) -> String {
        let parts = path.split(separator: "/").filter { $0 != "." }
        let joined = parts.joined(separator: "/")
        if path.hasPrefix("/") { return "/" + joined }
        return joined.isEmpty ? "." : joined
    }
}
