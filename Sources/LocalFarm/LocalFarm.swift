// LocalFarm module: see Package.swift
