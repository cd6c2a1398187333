// Coordinator module: see Package.swift
