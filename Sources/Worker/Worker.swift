// Worker module: see Package.swift
