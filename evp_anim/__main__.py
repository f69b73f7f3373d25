from evp_anim.cli import main

main()
