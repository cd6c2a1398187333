/// dubfarm's version.
public enum DubfarmVersion {
    public static let current = "0.1.0"
}
