// Engine module: see Package.swift
