import FarmMonitor
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thin terminal layer of `dubfarm top`: raw keyboard input (termios), the alternate
/// screen, the window size (TIOCGWINSZ) and SIGWINCH. Everything it draws comes from
/// `TopRenderer`, which is pure.
final class Terminal {
    private var saved = termios()
    private var active = false
    private var signalSources: [DispatchSourceSignal] = []
    /// Set from signal handlers; read by the draw loop.
    private let flags = Flags()

    final class Flags: Sendable {
        private let state = Mutex((resized: false, quit: false))
        var resized: Bool {
            get { state.withLock { $0.resized } }
            set { state.withLock { $0.resized = newValue } }
        }
        var quit: Bool {
            get { state.withLock { $0.quit } }
            set { state.withLock { $0.quit = newValue } }
        }
    }

    /// Whether stdin and stdout are both terminals.
    static var isInteractive: Bool { isatty(STDIN_FILENO) != 0 && isatty(STDOUT_FILENO) != 0 }

    /// Raw input (no echo, no line buffering; Ctrl-C still signals), alternate screen, hidden cursor.
    func enter() {
        guard !active else { return }
        tcgetattr(STDIN_FILENO, &saved)
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 0
            cc[Int(VTIME)] = 0
        }
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        active = true
        let flags = self.flags
        for sig in [SIGWINCH, SIGINT, SIGTERM, SIGHUP] {
            let resize = sig == SIGWINCH
            let action: @Sendable () -> Void = {
                if resize { flags.resized = true } else { flags.quit = true }
            }
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler(handler: action)
            src.resume()
            signalSources.append(src)
        }
        write("\u{1B}[?1049h\u{1B}[?25l\u{1B}[2J")
    }

    /// Restores everything `enter()` changed. Safe to call twice.
    func leave() {
        guard active else { return }
        active = false
        write("\u{1B}[0m\u{1B}[?25h\u{1B}[?1049l")
        tcsetattr(STDIN_FILENO, TCSANOW, &saved)
        for s in signalSources { s.cancel() }
        signalSources = []
        for sig in [SIGWINCH, SIGINT, SIGTERM, SIGHUP] { signal(sig, SIG_DFL) }
    }

    deinit { leave() }

    /// The window size (TIOCGWINSZ), or 80×24 when unknown.
    static func size() -> TerminalSize {
        var ws = winsize()
        let ok = withUnsafeMutablePointer(to: &ws) { ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), $0) } == 0
        if ok, ws.ws_col > 0, ws.ws_row > 0 {
            return TerminalSize(columns: Int(ws.ws_col), rows: Int(ws.ws_row))
        }
        return TerminalSize(columns: 80, rows: 24)
    }

    /// Waits up to `timeout` seconds for a key; nil when none came (or on a resize/quit signal).
    func key(timeout: Double) -> UInt8? {
        var fds = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        guard poll(&fds, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var byte: UInt8 = 0
        return read(STDIN_FILENO, &byte, 1) == 1 ? byte : nil
    }

    var resized: Bool {
        get { flags.resized }
        set { flags.resized = newValue }
    }
    var quitRequested: Bool { flags.quit }

    /// Draws `lines` from the top-left corner; the first line in reverse video.
    func draw(_ lines: [String]) {
        var out = "\u{1B}[H"
        for (i, line) in lines.enumerated() {
            if i > 0 { out += "\r\n" }
            out += i == 0 ? "\u{1B}[7m\(line)\u{1B}[0m" : line
        }
        out += "\u{1B}[J"
        write(out)
    }

    func write(_ s: String) {
        var data = Array(s.utf8)
        var off = 0
        while off < data.count {
            let n = data.withUnsafeMutableBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { if errno == EINTR { continue } else { return } }
            off += n
        }
    }
}
