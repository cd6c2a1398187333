/// dubfarm's version.
package enum DubfarmVersion {
    package static let current = "0.1.0"
}
