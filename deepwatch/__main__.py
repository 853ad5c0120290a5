from deepwatch.cli import main

main()
