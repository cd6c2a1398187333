import CLibPQ
import Foundation

/// Where a connection string points, for messages: never holds the password in anything it prints.
package struct PostgresTarget: Sendable, Hashable, CustomStringConvertible {
    /// Host name, address or unix-socket directory (`nil`: libpq's default socket).
    package var host: String?
    package var port: String?
    package var database: String?
    package var user: String?
    /// The password, kept only so it can be scrubbed from libpq's messages.
    let password: String?

    init(host: String?, port: String?, database: String?, user: String?, password: String?) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
    }

    /// Parses `url` (a `postgresql://` URL or `key=value` string) for printing; `nil` when malformed.
    package init?(parsing url: String) {
        guard let t = Self.parse(url).0 else { return nil }
        self = t
    }

    /// `url` with its password replaced by `***`, for logs and messages.
    package static func redacted(_ url: String) -> String {
        redact(url)
    }

    /// Parses a `postgresql://` URL or a `key=value` connection string with libpq's own parser.
    /// Returns `nil` and the parser's message when it is malformed.
    static func parse(_ conninfo: String) -> (PostgresTarget?, String?) {
        var err: UnsafeMutablePointer<CChar>?
        guard let opts = PQconninfoParse(conninfo, &err) else {
            var message = "malformed connection string"
            if let err {
                message = String(cString: err)
                PQfreemem(err)
            }
            return (nil, message.trimmingTrailingNewlines)
        }
        defer { PQconninfoFree(opts) }
        var values: [String: String] = [:]
        var p = opts
        while let kw = p.pointee.keyword {
            if let v = p.pointee.val { values[String(cString: kw)] = String(cString: v) }
            p += 1
        }
        let target = PostgresTarget(host: values["host"] ?? values["hostaddr"], port: values["port"],
                                    database: values["dbname"], user: values["user"], password: values["password"])
        return (target, nil)
    }

    /// `user@host:port/database`, without the password.
    package var description: String {
        var s = ""
        if let user { s += user + "@" }
        s += host ?? "(default socket)"
        if let port { s += ":" + port }
        if let database { s += "/" + database }
        return s
    }

    /// `text` with every occurrence of the password replaced by `***`.
    func scrub(_ text: String) -> String {
        guard let password, !password.isEmpty else { return text }
        return text.replacingAll(password, with: "***")
    }

    /// A best-effort redaction of a connection string that libpq could not parse.
    static func redact(_ conninfo: String) -> String {
        var s = conninfo
        // URL user-info: scheme://user:password@host
        if let schemeEnd = s.range(of: "://") {
            let afterScheme = s[schemeEnd.upperBound...]
            let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? s.endIndex
            let authority = s[schemeEnd.upperBound..<authorityEnd]
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                s.replaceSubrange(s.index(after: colon)..<at, with: "***")
            }
        }
        // password=… in a query string or key=value form.
        var out = ""
        var rest = Substring(s)
        while let r = rest.range(of: "password=") {
            out += rest[..<r.upperBound] + "***"
            rest = rest[r.upperBound...]
            let end = rest.firstIndex(where: { $0 == "&" || $0 == " " }) ?? rest.endIndex
            rest = rest[end...]
        }
        return out + rest
    }
}

extension String {
    var trimmingTrailingNewlines: String {
        var s = self
        while let last = s.last, last == "\n" || last == "\r" || last == " " { s.removeLast() }
        return s
    }

    func replacingAll(_ needle: String, with replacement: String) -> String {
        guard !needle.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: needle) {
            out += rest[..<r.lowerBound] + replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
