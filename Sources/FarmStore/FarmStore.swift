// FarmStore module: see Package.swift
