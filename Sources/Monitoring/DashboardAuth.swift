import DubfarmCore
import Foundation
import HummingbirdBcrypt

/// Who may act from the dashboard (cancel, retry, priority): the users of a password file in
/// `htpasswd -B` form (`name:$2b$…`, one per line; `dubfarm config hash-password` writes a
/// line), checked with bcrypt. A login gets a session (a random token in an HttpOnly,
/// SameSite=Strict cookie) for `sessionSeconds`; API clients may send HTTP Basic instead.
/// Looking needs no login; without a password file nobody can act.
package actor DashboardAuth {
    /// Name → bcrypt hash.
    let users: [String: String]
    let sessionSeconds: Double
    var sessions: [String: (user: String, expires: Date)] = [:]

    package static let cookieName = "dubfarm_session"
    static let unknownUserHash = Bcrypt.hash("not a password", cost: 12)

    package init(users: [String: String], sessionSeconds: Double = 12 * 3600) {
        self.users = users
        self.sessionSeconds = sessionSeconds
    }

    /// Whether anyone can log in at all.
    package nonisolated var hasUsers: Bool { !users.isEmpty }

    /// Reads a password file: `name:hash` lines, `#` comments and blank lines skipped.
    package static func loadUsers(path: String) throws -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw DubfarmError(.configuration, "dashboard.users_file \(path): cannot read it")
        }
        return try parseUsers(text, path: path)
    }

    package static func parseUsers(_ text: String, path: String) throws -> [String: String] {
        var users: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw DubfarmError(.configuration, "\(path) line \(n + 1): expected NAME:BCRYPT-HASH (make one with `dubfarm config hash-password`)")
            }
            let name = String(line[..<colon]), hash = String(line[line.index(after: colon)...])
            guard !name.isEmpty, ["$2a$", "$2b$", "$2y$"].contains(where: hash.hasPrefix), hash.count == 60 else {
                throw DubfarmError(.configuration, "\(path) line \(n + 1): '\(name)' has no bcrypt hash ($2b$…, 60 characters; make one with `dubfarm config hash-password`)")
            }
            users[name] = hash
        }
        return users
    }

    /// A bcrypt hash of `password` for a password file.
    package static func hash(_ password: String, cost: UInt8 = 12) -> String {
        Bcrypt.hash(password, cost: cost)
    }

    /// Whether `password` is `user`'s.
    package func verify(user: String, password: String) -> Bool {
        guard let hash = users[user] else {
            // The same work for an unknown name, so timing does not tell which names exist.
            _ = Bcrypt.verify(password, hash: Self.unknownUserHash)
            return false
        }
        // htpasswd writes $2y$, the same algorithm under another name.
        return Bcrypt.verify(password, hash: hash.hasPrefix("$2y$") ? "$2b$" + hash.dropFirst(4) : hash)
    }

    /// Logs `user` in: a new session token, or nil when the password is wrong.
    package func login(user: String, password: String) -> String? {
        guard verify(user: user, password: password) else { return nil }
        let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        sessions[token] = (user, Date().addingTimeInterval(sessionSeconds))
        sessions = sessions.filter { $0.value.expires > Date() }
        return token
    }

    package func logout(token: String) { sessions[token] = nil }

    /// The user of a live session.
    package func user(session token: String) -> String? {
        guard let s = sessions[token], s.expires > Date() else { return nil }
        return s.user
    }

    /// The user an `Authorization: Basic …` header proves, if it does.
    package func user(basic header: String) -> String? {
        guard header.lowercased().hasPrefix("basic "),
              let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
              let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":") else { return nil }
        let user = String(pair[..<colon])
        return verify(user: user, password: String(pair[pair.index(after: colon)...])) ? user : nil
    }
}
