// FarmProtocol module: see Package.swift
